"""A Node app and a Bottle app (and a Flask app) share sessions: one table, one cookie, on every backend.

The Node side is tests/node_app (Express, express-session, connect-session-knex 5), run as a
subprocess on a free loopback port; the Python side is driven through WebTest. A Browser moves
the connect.sid cookie between the two by hand, as a browser does for two apps on one site.
Needs node and npm (`npm ci` runs once in tests/node_app when its packages are missing); without
them the tests skip, except under CI=true, where they fail.
"""

import datetime
import http.client
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import bottle
import flask
import peewee
import pytest
import webtest

from conftest import IN_CI, SECRET, build_app, database_url, drop_table
from peewee_sessions import FlaskSessionInterface, sign_session_id

NODE_APP = Path(__file__).parent / "node_app"
NODE_PACKAGES = ["express", "express-session", "connect-session-knex", "knex", "pg", "mysql2"]
KNEX_CLIENTS = {"sqlite": "sqlite3", "postgresql": "pg", "mysql": "mysql2"}
MAX_AGE = 3600  # seconds: the cookie lifetime on both sides
UTC = datetime.timezone.utc
ISO_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # JavaScript's Date#toISOString


def unavailable(reason):
    if IN_CI:
        pytest.fail("CI=true: the Node interop tests may not be skipped. " + reason)
    pytest.skip(reason)


def node_can_load(*modules):
    script = "for (const m of process.argv.slice(1)) require(m)"
    result = subprocess.run(["node", "-e", script, *modules], cwd=NODE_APP, capture_output=True, timeout=60)
    return result.returncode == 0


@pytest.fixture(scope="session")
def node_sqlite3_built():
    """tests/node_app's packages, installed once per test run with `npm ci` when missing; whether sqlite3 built."""
    if not shutil.which("node") or not shutil.which("npm"):
        unavailable("Node.js (node and npm, Node >= 20.17) is not installed; it runs tests/node_app")
    if not node_can_load(*NODE_PACKAGES):
        command = ["npm", "ci", "--no-audit", "--no-fund"]
        try:
            result = subprocess.run(command, cwd=NODE_APP, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            unavailable("`npm ci` in %s took more than 15 minutes" % NODE_APP)
        if result.returncode or not node_can_load(*NODE_PACKAGES):
            unavailable("`npm ci` in %s failed:\n%s" % (NODE_APP, (result.stdout + result.stderr)[-3000:]))
    return node_can_load("sqlite3")


class NodeApp:
    """tests/node_app/server.js as a subprocess; it prints its port once its table is ready."""

    def __init__(self, env, log_path):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["node", "server.js"], cwd=NODE_APP, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while not (found := re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.output())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("the Node app did not start:\n" + self.output())
            time.sleep(0.05)
        self.port = int(found.group(1))

    def output(self):
        return self.log_path.read_text(errors="replace")

    def request(self, method, path, cookie=None):
        """(body, Set-Cookie headers) of a request that must succeed."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, headers={"Cookie": "connect.sid=" + cookie} if cookie else {})
            response = connection.getresponse()
            body = response.read().decode()
        finally:
            connection.close()
        assert response.status == 200, "%s %s -> %s %s\n%s" % (method, path, response.status, body, self.output())
        return body, response.headers.get_all("Set-Cookie") or []

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def start_node(node_sqlite3_built, backend, db, make_store, table_name, tmp_path):
    """Starts the Node app on the test's database and table; stops it and drops the table afterwards.

    It asks for make_store only to be set up after it, so that Node stops before the stores close.
    """
    if backend == "sqlite" and not node_sqlite3_built:
        unavailable("Node's sqlite3 package did not build in %s (run `npm ci` there to see why)" % NODE_APP)
    url = database_url(backend, tmp_path)
    connection = url[len("sqlite:///"):] if backend == "sqlite" else re.sub(r"^[^:]*", backend, url)
    started = []

    def start(**settings):
        env = dict(
            os.environ,
            TZ="Asia/Kolkata",  # not UTC, so that a time-zone slip shows
            KNEX_CLIENT=KNEX_CLIENTS[backend],
            KNEX_CONNECTION=connection,
            TABLE_NAME=table_name,
            SESSION_SECRET=SECRET,
            COOKIE_NAME="connect.sid",
            COOKIE_MAX_AGE_MS=str(MAX_AGE * 1000),
            CLEANUP_INTERVAL_MS="0",
            PORT="0",
        )
        env.update(settings)
        started.append(NodeApp(env, tmp_path / ("node-%d.log" % len(started))))
        return started[-1]

    yield start
    for app in started:
        app.stop()
    drop_table(db, table_name)  # also when only Node made it


def bottle_app(store):
    """conftest's app (/count, /read) with the Node app's other routes, and the same cookie lifetime."""
    app, _ = build_app(store, max_age=MAX_AGE)

    @app.get("/whoami")
    def whoami(session):
        bottle.response.content_type = "application/json"
        return json.dumps(dict(session))

    @app.route("/login", method=["GET", "POST"])
    def login(session):
        session.regenerate()
        session["user"] = bottle.request.query.name
        return json.dumps(dict(session))

    @app.route("/logout", method=["GET", "POST"])
    def logout(session):
        session.destroy()
        return "bye"

    return webtest.TestApp(app)


def flask_app(store):
    """bottle_app's routes in Flask (FlaskSessionInterface): the same table, cookie, secret and lifetime."""
    app = flask.Flask(__name__)
    app.secret_key = SECRET
    app.config["SESSION_COOKIE_NAME"] = "connect.sid"
    app.session_interface = FlaskSessionInterface(store, max_age=MAX_AGE, samesite="Lax")
    session = flask.session

    @app.get("/count")
    def count():
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/whoami")
    def whoami():
        return flask.Response(json.dumps(dict(session)), content_type="application/json")

    @app.route("/login", methods=["GET", "POST"])
    def login():
        session.regenerate()
        session["user"] = flask.request.args["name"]
        return json.dumps(dict(session))

    @app.route("/logout", methods=["GET", "POST"])
    def logout():
        session.destroy()
        return "bye"

    return webtest.TestApp(app)


class Browser:
    """One browser whose connect.sid cookie (as sent on the wire) goes to both apps, as on one site."""

    def __init__(self, web, node, sid=None):
        self.web, self.node_app = web, node
        self.cookie = urllib.parse.quote(sign_session_id(sid, SECRET), safe="") if sid else None

    def python(self, path, method="GET"):
        """A request to the Python app (`web`: the Bottle one or the Flask one)."""
        self.web.reset()  # WebTest's own cookie jar stays out of it
        headers = {"Cookie": "connect.sid=" + self.cookie} if self.cookie else {}
        response = self.web.request(path, method=method, headers=headers)
        self._take(response.headers.getall("Set-Cookie"))
        return response.text

    bottle = flask = python

    def node(self, path, method="GET"):
        body, set_cookies = self.node_app.request(method, path, self.cookie)
        self._take(set_cookies)
        return body

    def whoami(self, side):
        """The session's keys and values, in order, as the Bottle or the Node app sees them."""
        return list(json.loads(getattr(self, side)("/whoami")).items())

    def _take(self, set_cookies):
        for header in set_cookies:
            name, _, rest = header.partition("=")
            if name == "connect.sid":
                self.cookie = rest.split(";")[0] or None  # an empty value clears it

    @property
    def sid(self):
        value = urllib.parse.unquote(self.cookie)
        return value[2:value.rindex(".")]


def stored_rows(store):
    """{sid: (the sess JSON text, expired as the driver returns it)}, straight from the table."""
    quote = store.db.quote
    sess = "CAST(sess AS TEXT)" if isinstance(store.db, peewee.PostgresqlDatabase) else "sess"
    sql = "SELECT %s%s%s, %s, expired FROM %s%s%s" % (
        quote[0], store.sid_field_name, quote[1], sess, quote[0], store.table_name, quote[1])
    with store.connection():
        return {sid: (text, expired) for sid, text, expired in store.db.execute_sql(sql).fetchall()}


def expiring(seconds_from_now, **data):
    """A session as express-session stores it, expiring that many seconds from now."""
    expires = datetime.datetime.now(UTC) + datetime.timedelta(seconds=seconds_from_now)
    cookie = {"originalMaxAge": MAX_AGE * 1000, "expires": expires, "httpOnly": True, "path": "/", "sameSite": "lax"}
    return {"cookie": cookie, **data}


def test_node_creates_the_table_and_bottle_shares_its_sessions(start_node, make_store):
    node = start_node()  # connect-session-knex creates the table
    store = make_store(create_table=False)  # TableMissingError unless Node made it
    browser = Browser(bottle_app(store), node)
    assert [browser.node("/incr"), browser.node("/incr")] == ["1", "2"]
    assert json.loads(browser.node("/login?name=ann", "POST")) == {"n": 2, "user": "ann"}
    sid = browser.sid
    assert browser.bottle("/read") == "2"
    assert browser.bottle("/count") == "3"
    assert browser.whoami("bottle") == [("n", 3), ("user", "ann")]
    assert browser.sid == sid
    assert browser.node("/incr") == "4"  # Node sees what Bottle wrote
    assert browser.whoami("node") == [("n", 4), ("user", "ann")]
    assert browser.bottle("/read") == "4"
    assert list(store.get(sid)) == ["cookie", "n", "user"]


def test_bottle_creates_the_table_and_node_shares_its_sessions(start_node, make_store):
    store = make_store(sid_field_name="session_id")  # the Python store creates the table
    node = start_node(CREATE_TABLE="false", SID_FIELD_NAME="session_id")  # fails if the table is missing
    browser = Browser(bottle_app(store), node)
    assert [browser.bottle("/count"), browser.bottle("/count")] == ["1", "2"]
    assert json.loads(browser.bottle("/login?name=bob", "POST")) == {"n": 2, "user": "bob"}
    sid = browser.sid
    assert browser.node("/incr") == "3"
    assert browser.whoami("node") == [("n", 3), ("user", "bob")]
    assert browser.sid == sid
    assert browser.bottle("/read") == "3"  # Bottle sees what Node wrote
    assert browser.bottle("/count") == "4"
    assert browser.node("/incr") == "5"
    assert store.get(sid)["n"] == 5


def test_both_sides_write_the_same_row(start_node, make_store, backend):
    node = start_node()
    store = make_store(create_table=False)
    web = bottle_app(store)
    by_node, by_bottle = Browser(web, node), Browser(web, node)
    by_node.node("/login?name=ann"), by_node.node("/incr")
    by_bottle.bottle("/login?name=ann"), by_bottle.bottle("/count")
    rows = stored_rows(store)
    (node_sess, node_expired), (bottle_sess, bottle_expired) = rows[by_node.sid], rows[by_bottle.sid]
    template = ('{"cookie":{"originalMaxAge":3600000,"expires":"E","httpOnly":true,"path":"/","sameSite":"lax"},'
                '"user":"ann","n":1}')  # what express-session writes, byte for byte
    # express-session re-derives originalMaxAge from two Date.now() calls: it can come out a few ms short.
    expected = re.escape(template).replace('"E"', '"%s"' % ISO_MS).replace("3600000", r"(?:3600000|35999\d\d)")
    assert re.fullmatch(expected, node_sess), node_sess
    assert re.fullmatch(expected, bottle_sess), bottle_sess
    assert type(node_expired) is type(bottle_expired)
    if backend == "sqlite":  # ISO text, compared as text
        assert re.fullmatch(ISO_MS, node_expired) and re.fullmatch(ISO_MS, bottle_expired)
    elif backend == "mysql":  # a UTC DATETIME in whole seconds
        assert node_expired.microsecond == bottle_expired.microsecond == 0
    else:  # timestamptz
        assert node_expired.tzinfo is not None and bottle_expired.tzinfo is not None


def test_each_side_reads_the_expiry_the_other_wrote(start_node, make_store):
    node = start_node()
    store = make_store(create_table=False)
    web = bottle_app(store)
    # Node's expiry, read by Python: now + maxAge.
    browser = Browser(web, node)
    browser.node("/incr")
    _, expiry = store.get_with_expiry(browser.sid)
    expected = datetime.datetime.now(UTC) + datetime.timedelta(seconds=MAX_AGE)
    assert abs((expiry - expected).total_seconds()) < 3
    # Python's expiry, read by Node: ten seconds either side of now.
    store.set("live-for-10-more-seconds", expiring(10, n=7))
    store.set("gone-for-10-seconds", expiring(-10, n=8))
    assert Browser(web, node, "live-for-10-more-seconds").whoami("node") == [("n", 7)]
    assert Browser(web, node, "gone-for-10-seconds").whoami("node") == []
    # Node touched the live one on that read: Python sees the new expiry.
    _, expiry = store.get_with_expiry("live-for-10-more-seconds")
    expected = datetime.datetime.now(UTC) + datetime.timedelta(seconds=MAX_AGE)
    assert abs((expiry - expected).total_seconds()) < 3


def test_expired_sessions_are_invisible_to_both_and_swept_by_either(start_node, make_store):
    node = start_node()
    store = make_store(create_table=False)
    web = bottle_app(store)

    def make_sessions():
        """Two live sessions and two expired ones (one written by each side)."""
        live_node, live_bottle, gone_node = Browser(web, node), Browser(web, node), Browser(web, node)
        live_node.node("/incr"), live_bottle.bottle("/count")
        gone_node.node("/incr?maxAge=-5000")  # connect-session-knex writes a row that expired 5 s ago
        gone_sid = "gone-" + live_bottle.sid
        store.set(gone_sid, expiring(-5, n=1))
        return {live_node.sid, live_bottle.sid}, [gone_node, Browser(web, node, gone_sid)]

    live, gone = make_sessions()
    assert len(stored_rows(store)) == 4
    for browser in gone:
        assert browser.whoami("node") == [] and browser.whoami("bottle") == []
        assert store.get(browser.sid) is None
    assert store.length() == 2 and set(store.all()) == live
    assert store.sweep() == 2
    assert set(stored_rows(store)) == live

    # connect-session-knex's cleanup timer (it also runs as it starts).
    more_live, _ = make_sessions()
    live |= more_live
    assert len(stored_rows(store)) == 6
    start_node(CLEANUP_INTERVAL_MS="100")
    deadline = time.monotonic() + 10
    while set(stored_rows(store)) != live and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(stored_rows(store)) == live


def test_a_log_out_on_one_side_is_a_log_out_on_the_other(start_node, make_store):
    node = start_node()
    store = make_store(create_table=False)
    web = bottle_app(store)
    name = urllib.parse.quote("Zoë")

    # Logged in on Node, out on Bottle.
    browser = Browser(web, node)
    browser.node("/login?name=" + name, "POST")
    assert browser.whoami("bottle") == [("user", "Zoë")]
    stale_cookie, sid = browser.cookie, browser.sid
    assert browser.bottle("/logout", "POST") == "bye"
    assert browser.cookie is None  # Bottle clears the cookie
    browser.cookie = stale_cookie  # and a copy of it is worth nothing on Node
    assert browser.whoami("node") == [] and store.get(sid) is None

    # Logged in on Bottle, out on Node.
    browser = Browser(web, node)
    browser.bottle("/login?name=" + name, "POST")
    assert browser.whoami("node") == [("user", "Zoë")]
    sid = browser.sid
    assert browser.node("/logout", "POST") == "bye"
    assert browser.sid == sid  # express-session leaves the cookie in place...
    assert browser.whoami("bottle") == [] and store.get(sid) is None  # ...but the session is gone
    assert browser.bottle("/count") == "1" and browser.sid != sid


def test_a_log_in_on_flask_is_a_log_in_on_express_and_back(start_node, make_store):
    node = start_node()
    store = make_store(create_table=False)
    web = flask_app(store)
    name = urllib.parse.quote("Zoë")

    # Logged in on Flask, seen by Express; logged out on Express, so out on Flask too.
    browser = Browser(web, node)
    browser.flask("/login?name=" + name, "POST")
    sid = browser.sid
    assert browser.whoami("node") == [("user", "Zoë")]
    assert browser.sid == sid and store.get(sid)["user"] == "Zoë"
    assert browser.node("/logout", "POST") == "bye"
    assert browser.whoami("flask") == [] and store.get(sid) is None
    assert browser.flask("/count") == "1" and browser.sid != sid  # a new session, not the old one back

    # Logged in on Express, seen by Flask; logged out on Flask, so out on Express too.
    browser = Browser(web, node)
    browser.node("/login?name=" + name, "POST")
    assert browser.whoami("flask") == [("user", "Zoë")]
    stale_cookie, sid = browser.cookie, browser.sid
    assert browser.flask("/logout", "POST") == "bye"
    assert browser.cookie is None  # Flask clears the cookie
    browser.cookie = stale_cookie  # and a copy of it is worth nothing on Node
    assert browser.whoami("node") == [] and store.get(sid) is None
