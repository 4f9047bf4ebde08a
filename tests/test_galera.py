"""Sessions on a three-node MariaDB Galera cluster: every node takes writes, one may go away.

The cluster (tests/services.py's GaleraCluster: Debian's galera-4 with the machine's mariadbd, on
free loopback ports, apart from the MariaDB on 3306) starts once per test run and stops at its
end. The tests use only the store's and the plugin's public API. Each node has its own store (its
own connection), as each app host behind a load balancer would; a request pinned to one node stands
for a host whose database address is that node.

Galera reports a transaction that lost certification to a concurrent one on another node as error
1213 (a deadlock), at its COMMIT or at its next statement; nothing of it was committed. Galera
retries a lone autocommit statement once by itself, not a transaction. The store retries its own
statements and transactions; a locked() block, which it cannot re-run, raises SessionConflict and
changes nothing, and Session.run_locked() re-runs such a block.

Without galera-4, mariadbd, mariadb-install-db and rsync the tests skip (under CI=true they fail).
"""

import json
import os
import shutil
import tempfile
import threading
import time
import urllib.parse

import bottle
import pytest
import webtest
from playhouse.db_url import connect

from conftest import SECRET, build_app, drop_table, unavailable
from peewee_sessions import PeeweeSessionStore, SessionConflict, SessionStoreUnavailable, sign_session_id
from services import GALERA_PROVIDER, INSTALL_DB, MARIADBD, GaleraCluster, ServiceError
from test_node_interop import NodeApp
from test_node_interop import node_sqlite3_built  # noqa: F401 (a fixture: npm ci when needed)

HOW_TO_ENABLE = "apt-get install galera-4 mariadb-server rsync"
ROUNDS = 5  # races are chancy: a few rounds of each make one likely


@pytest.fixture(scope="session")
def galera():
    """A three-node cluster for the whole test run (about 15 s to start on 2 cores)."""
    missing = [path for path in (MARIADBD, GALERA_PROVIDER) if not os.path.exists(path)]
    missing += [tool for tool in (INSTALL_DB, "rsync") if not shutil.which(tool)]
    if missing:
        unavailable("a Galera cluster needs %s; to run these tests: %s" % (", ".join(missing),
                                                                            HOW_TO_ENABLE))
    directory = tempfile.mkdtemp(prefix="peewee-sessions-galera-")
    cluster = GaleraCluster(directory)
    try:
        cluster.start()
    except ServiceError as exc:
        pytest.fail("the Galera cluster did not start (its files are in %s): %s" % (directory, exc))
    yield cluster
    cluster.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def cluster(galera):
    """The session's cluster with every node up and synced (a failed test may have left one down)."""
    for node in galera.nodes:
        if not node.is_running():
            node.start()
        node.wait_synced()
    return galera


@pytest.fixture
def stores(cluster, table_name):
    """One store per node, all on one table; the table is dropped afterwards."""
    made = [PeeweeSessionStore(connect(node.url), table_name=table_name, clear_interval=0)
            for node in cluster.nodes]
    yield made
    for store in made:
        store.close()
    drop_table(made[0].db, table_name)


def galera_app(store):
    """conftest's app (/count, /read) answering 503 when the store is unavailable, with a few more routes."""
    app, _ = build_app(store, error_status=503)

    @app.get("/set/<key>")
    def set_key(key, session):
        session[key] = True
        return "ok"

    @app.get("/login")
    def login(session):
        session.regenerate()
        session["user"] = bottle.request.query.name
        return "hello"

    @app.get("/logout")
    def logout(session):
        session.destroy()
        return "bye"

    @app.get("/whoami")
    def whoami(session):
        return json.dumps(dict(session))

    @app.get("/locked-count")
    def locked_count(session):
        with session.locked():
            session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/run-locked-count")
    def run_locked_count(session):
        session.run_locked(lambda s: s.update(n=s.get("n", 0) + 1))  # again when another node won
        return str(session["n"])

    return app


@pytest.fixture
def apps(stores):
    """One Bottle app per node, each on its node's store."""
    return [galera_app(store) for store in stores]


class Visitor:
    """One browser: its connect.sid cookie goes along to whichever node's app it calls."""

    def __init__(self, sid=None):
        self.cookie = urllib.parse.quote(sign_session_id(sid, SECRET), safe="") if sid else None

    def get(self, app, path):
        """The response, whatever its status; a fresh TestApp a call, so that threads share nothing."""
        headers = {"Cookie": "connect.sid=" + self.cookie} if self.cookie else {}
        response = webtest.TestApp(app).get(path, headers=headers, expect_errors=True)
        for header in response.headers.getall("Set-Cookie"):
            name, _, rest = header.partition("=")
            if name == "connect.sid":
                self.cookie = rest.split(";")[0] or None
        return response

    @property
    def sid(self):
        value = urllib.parse.unquote(self.cookie)
        return value[2:value.rindex(".")]


def all_at_once(calls):
    """Run the calls in threads released together; their results (an exception is a result) in order."""
    results = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index):
        try:
            start.wait(30)
            results[index] = calls[index]()
        except Exception as exc:  # the test looks at it
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a request hung"
    return results


def described(responses):
    """The status of each answer that is not a 200 (or the exception), for assertions."""
    return [getattr(r, "status_int", None) or repr(r) for r in responses
            if getattr(r, "status_int", None) != 200]


@pytest.fixture
def why(caplog):
    """why(): the distinct reasons the plugin gave for its 503s so far (it logs each), for messages."""
    caplog.set_level("WARNING", logger="peewee_sessions")

    def reasons():
        return sorted({message for message in (record.getMessage() for record in caplog.records)
                       if "answering" in message})

    return reasons


def live_session(**data):
    return {"cookie": {"originalMaxAge": 3600000, "httpOnly": True, "path": "/"}, **data}


# -- One session, three nodes ---------------------------------------------------------------------


def test_a_session_saved_through_one_node_is_read_and_changed_through_the_others(stores):
    a, b, c = stores
    a.set("shared", live_session(n=1, user="ann"))
    assert b.get("shared") == c.get("shared") == live_session(n=1, user="ann")
    assert c.patch("shared", {"n": 2}, removed=["user"])
    assert a.get("shared") == b.get("shared") == live_session(n=2)
    later = live_session(n=2)
    later["cookie"]["originalMaxAge"] = 7200000
    b.touch("shared", later)
    assert abs(a.get_with_expiry("shared")[1] - c.get_with_expiry("shared")[1]).total_seconds() < 1
    with a.locked("shared") as (sess, _):
        sess["n"] += 1
        a.set("shared", sess)
    assert b.get("shared")["n"] == c.get("shared")["n"] == 3
    assert c.destroy("shared") == 1
    assert a.get("shared") is None and b.get("shared") is None
    assert a.destroy("shared") == 0


def test_a_visitor_moved_between_nodes_on_every_request_keeps_the_session(apps, stores):
    visitor = Visitor()
    answers = [visitor.get(apps[i % 3], "/count") for i in range(9)]
    assert [(r.status_int, r.text) for r in answers] == [(200, str(i + 1)) for i in range(9)]
    assert visitor.get(apps[1], "/login?name=bob").status_int == 200
    assert json.loads(visitor.get(apps[2], "/whoami").text) == {"n": 9, "user": "bob"}
    sid = visitor.sid
    assert visitor.get(apps[0], "/logout").text == "bye"
    assert [store.get(sid) for store in stores] == [None, None, None]


@pytest.mark.usefixtures("node_sqlite3_built")
def test_the_node_app_on_one_node_and_the_bottle_app_on_another(cluster, stores, table_name, tmp_path):
    """Express + connect-session-knex through node 0, Bottle through node 1, a store on node 2 watching."""
    env = dict(os.environ, TZ="Asia/Kolkata", KNEX_CLIENT="mysql2", KNEX_CONNECTION=cluster.nodes[0].url,
               TABLE_NAME=table_name, SESSION_SECRET=SECRET, COOKIE_NAME="connect.sid",
               COOKIE_MAX_AGE_MS="3600000", CLEANUP_INTERVAL_MS="0", PORT="0", CREATE_TABLE="false")
    node = NodeApp(env, tmp_path / "node.log")  # the stores made the table; Node fails if it is missing
    try:
        bottle_web, watcher = galera_app(stores[1]), stores[2]
        visitor = Visitor()

        def on_node(path):
            body, set_cookies = node.request("GET", path, visitor.cookie)
            for header in set_cookies:
                name, _, rest = header.partition("=")
                if name == "connect.sid":
                    visitor.cookie = rest.split(";")[0]
            return body

        assert [on_node("/incr"), on_node("/incr")] == ["1", "2"]
        assert json.loads(on_node("/login?name=ann")) == {"n": 2, "user": "ann"}
        sid = visitor.sid
        assert visitor.get(bottle_web, "/read").text == "2"
        assert visitor.get(bottle_web, "/count").text == "3"
        assert visitor.sid == sid
        assert on_node("/incr") == "4"  # Node, on node 0, sees what Bottle wrote through node 1
        assert watcher.get(sid)["n"] == 4 and watcher.get(sid)["user"] == "ann"
        assert visitor.get(bottle_web, "/logout").text == "bye"
        visitor.cookie = urllib.parse.quote(sign_session_id(sid, SECRET), safe="")  # a stale copy of it
        assert json.loads(on_node("/whoami")) == {}  # logged out on Node too
        assert watcher.get(sid) is None
    finally:
        node.stop()


# -- Concurrent saves of one session through different nodes -------------------------------------


def test_concurrent_requests_setting_different_keys_through_all_nodes_keep_them_all(apps, stores, why):
    for round_ in range(ROUNDS):
        visitor = Visitor()
        assert visitor.get(apps[0], "/count").status_int == 200
        keys = ["k%d" % i for i in range(12)]
        responses = all_at_once([
            lambda i=i, key=key: Visitor(visitor.sid).get(apps[i % 3], "/set/" + key)
            for i, key in enumerate(keys)])
        assert described(responses) == [], ("round %d" % round_, why())
        for store in stores:
            sess = store.get(visitor.sid)
            assert {k for k in sess if k.startswith("k")} == set(keys) and sess["n"] == 1


def test_a_log_out_through_one_node_is_never_undone_by_saves_through_the_others(apps, stores, why):
    for round_ in range(ROUNDS):
        visitor = Visitor()
        assert visitor.get(apps[0], "/login?name=ann").status_int == 200
        sid = visitor.sid
        calls = [lambda: Visitor(sid).get(apps[0], "/logout")]
        calls += [lambda i=i: Visitor(sid).get(apps[1 + i % 2], "/set/k%d" % i) for i in range(6)]
        responses = all_at_once(calls)
        assert responses[0].status_int == 200 and responses[0].text == "bye", (responses[0].status, why())
        assert [store.get(sid) for store in stores] == [None, None, None], "round %d" % round_
        assert described(responses) == [], ("round %d" % round_, why())


def count_in_locked_blocks(apps, threads=6, per_thread=10, path="/locked-count"):
    """(sid, responses): `threads` visitors of one session, on the nodes in turn, calling `path`."""
    visitor = Visitor()
    assert visitor.get(apps[0], path).text == "1"

    def client(app):
        return [Visitor(visitor.sid).get(app, path) for _ in range(per_thread)]

    results = all_at_once([lambda i=i: client(apps[i % len(apps)]) for i in range(threads)])
    return visitor.sid, [response for result in results for response in result]


def test_a_counter_in_session_locked_through_all_nodes_counts_every_answered_request(apps, stores, why):
    """A request whose locked() block failed is an error answer and changed nothing: n counts the 200s."""
    sid, responses = count_in_locked_blocks(apps)
    assert all(response.status_int in (200, 503) for response in responses), (described(responses), why())
    answered = sum(response.status_int == 200 for response in responses)
    assert [store.get(sid)["n"] for store in stores] == [1 + answered] * 3


def test_every_request_counting_in_session_run_locked_through_all_nodes_gets_through(apps, stores, why):
    """session.run_locked() re-runs a block that lost certification to another node: no request fails."""
    sid, responses = count_in_locked_blocks(apps, path="/run-locked-count")
    assert described(responses) == [], why()
    assert [store.get(sid)["n"] for store in stores] == [1 + len(responses)] * 3


def test_a_locked_block_that_lost_to_another_node_raises_a_conflict_and_changes_nothing(stores):
    """Read-modify-write under store.locked(sid) from every node at once: a block that loses
    certification to another node's commit raises SessionConflict (not an outage) and changes
    nothing, so n counts exactly the blocks that returned: no increment lost or doubled."""
    sid, threads, per_thread = "counted", 6, 10
    stores[0].set(sid, live_session(n=0))

    def increment(store):
        done = conflicts = 0
        for _ in range(per_thread):
            try:
                with store.locked(sid) as (sess, _):
                    sess["n"] += 1
                    store.set(sid, sess)
                done += 1
            except SessionConflict:
                conflicts += 1
        return done, conflicts

    results = all_at_once([lambda i=i: increment(stores[i % 3]) for i in range(threads)])
    assert all(isinstance(result, tuple) for result in results), results  # nothing else was raised
    done = sum(result[0] for result in results)
    assert [store.get(sid)["n"] for store in stores] == [done] * 3


# -- A node stopped in the middle of a load run ---------------------------------------------------


class LoadRun:
    """Client threads, each with its own session on one node's app, calling /count until stopped."""

    def __init__(self, apps, per_node=2):
        self.stop = threading.Event()
        self.bound = [index for index in range(len(apps)) for _ in range(per_node)]  # each client's node
        self.apps = apps
        self.visitors = [Visitor() for _ in self.bound]
        self.answers = [[] for _ in self.bound]  # (time, status, body) per client
        self.threads = [threading.Thread(target=self._loop, args=(i,)) for i in range(len(self.bound))]

    def _loop(self, index):
        app, visitor = self.apps[self.bound[index]], self.visitors[index]
        while not self.stop.is_set():
            response = visitor.get(app, "/count")
            self.answers[index].append((time.monotonic(), response.status_int, response.text))
            time.sleep(0.01)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def test_a_node_stopped_in_the_middle_of_a_load_run(cluster, apps, stores, why):
    stopped = cluster.nodes[2]
    with LoadRun(apps) as load:
        time.sleep(1)
        stopped.stop()
        down = time.monotonic()
        time.sleep(0.5)
        with pytest.raises(SessionStoreUnavailable):
            stores[2].get("anyone")
        time.sleep(1)
        stopped.start()
        stopped.wait_synced()
        back = time.monotonic()
        time.sleep(1.5)
    for client, (node, visitor, answers) in enumerate(zip(load.bound, load.visitors, load.answers)):
        statuses = [status for _, status, _ in answers]
        if node != 2:  # the other nodes carry on
            assert set(statuses) == {200}, (client, described_answers(answers), why())
        else:  # 503 while its node is away, 200 again once it is back
            assert set(statuses) <= {200, 503}, (client, described_answers(answers), why())
            assert 503 in statuses and statuses[-1] == 200
            # (back is when the poll saw the node synced: it may have served a little before.)
            assert all(status == 503 for t, status, _ in answers if down + 0.2 < t < back - 1)
            assert all(status == 200 for t, status, _ in answers if t > back + 0.5)
        # No saved session lost: each acknowledged counter is one more than the last acknowledged one,
        # or up to one more per 503 in between (a commit whose reply was lost as the node went away).
        last, unanswered = 0, 0
        for _, status, body in answers:
            if status == 503:
                unanswered += 1
                continue
            assert last + 1 <= int(body) <= last + 1 + unanswered, (client, last, body, unanswered)
            last, unanswered = int(body), 0
        assert [store.get(visitor.sid)["n"] for store in stores] == [last] * 3  # node 2 caught up


def described_answers(answers):
    return [(status, body[:200]) for _, status, body in answers if status != 200][:5]
