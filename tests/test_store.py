"""The store's express-session semantics: get, set, touch, destroy, length, all, clear, sweep."""

import bisect
import contextlib
import datetime
import itertools
import json
import random
import re

import peewee
import pytest

import peewee_sessions
from conftest import Counter, drop_table, open_database
from peewee_sessions import PeeweeSessionStore, SessionStoreError, _iso_z

UTC = datetime.timezone.utc


def in_(seconds):
    return _iso_z(datetime.datetime.now(UTC) + datetime.timedelta(seconds=seconds))


def live(**data):
    return {"cookie": {"originalMaxAge": 3600000, "expires": in_(3600), "httpOnly": True, "path": "/"}, **data}


def stored_expiry(store, sid):
    return store.get_with_expiry(sid)[1]


def test_round_trip_gives_back_the_exact_dict(store):
    sess = live(user={"name": "Zoë 🎉", "roles": ["admin", "dev"], "prefs": {"dark": True, "n": None}},
                count=3, ratio=0.25, quote='"; DROP TABLE sessions; --')
    store.set("sid-1", sess)
    assert store.get("sid-1") == sess


def test_set_inserts_then_replaces(store):
    store.set("sid-1", live(n=1))
    store.set("sid-1", live(n=2))
    assert store.get("sid-1")["n"] == 2
    assert store.length() == 1


def test_set_replaces_the_whole_document(store):
    store.set("sid-1", live(a=1, b=2))
    store.set("sid-1", live(a=1))
    assert "b" not in store.get("sid-1")


def test_missing_session_is_none(store):
    assert store.get("nope") is None


def test_expiry_comes_from_cookie_expires(store):
    store.set("sid-1", {"cookie": {"expires": "2099-05-06T07:08:09.123Z", "originalMaxAge": 5}})
    expected = datetime.datetime(2099, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    assert abs(stored_expiry(store, "sid-1") - expected) < datetime.timedelta(seconds=1)


def test_expiry_accepts_a_datetime(store):
    expires = datetime.datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.set("sid-1", {"cookie": {"expires": expires}})
    assert stored_expiry(store, "sid-1") == expires


@pytest.mark.parametrize("key", ["maxAge", "originalMaxAge"])
def test_expiry_falls_back_to_max_age_in_milliseconds(store, key):
    before = datetime.datetime.now(UTC)
    store.set("sid-1", {"cookie": {"expires": None, key: 2 * 3600 * 1000}})
    delta = stored_expiry(store, "sid-1") - before
    assert datetime.timedelta(hours=2) - datetime.timedelta(seconds=2) < delta < datetime.timedelta(hours=2, seconds=2)


@pytest.mark.parametrize("sess", [{}, {"cookie": {}}, {"cookie": {"expires": None, "originalMaxAge": None}}])
def test_expiry_defaults_to_one_day(store, sess):
    before = datetime.datetime.now(UTC)
    store.set("sid-1", sess)
    delta = stored_expiry(store, "sid-1") - before
    assert datetime.timedelta(days=1) - datetime.timedelta(seconds=2) < delta < datetime.timedelta(days=1, seconds=2)


def test_an_expired_row_is_never_returned(store):
    store.set("past", {"cookie": {"expires": in_(-5)}})
    store.set("future", live())
    assert store.get("past") is None
    assert store.length() == 1
    assert list(store.all()) == ["future"]


def test_expiry_boundary_is_exclusive(store, monkeypatch):
    expires = datetime.datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    store.set("sid-1", {"cookie": {"expires": expires}})
    monkeypatch.setattr(peewee_sessions, "_utcnow", lambda: expires - datetime.timedelta(seconds=1))
    assert store.get("sid-1") is not None
    monkeypatch.setattr(peewee_sessions, "_utcnow", lambda: expires)
    assert store.get("sid-1") is None
    assert store.length() == 0
    assert store.sweep() == 1


def test_touch_moves_only_the_expiry(store):
    sess = live(n=1)
    store.set("sid-1", sess)
    later = {"cookie": {"expires": "2099-01-01T00:00:00.000Z"}, "n": 999}
    store.touch("sid-1", later)
    found, expiry = store.get_with_expiry("sid-1")
    assert found == sess
    assert expiry == datetime.datetime(2099, 1, 1, tzinfo=UTC)


def test_touch_never_creates_a_row(store):
    store.touch("ghost", live())
    assert store.get("ghost") is None
    assert store.length() == 0


def test_touch_never_revives_an_expired_row(store):
    store.set("sid-1", {"cookie": {"expires": in_(-5)}})
    store.touch("sid-1", live())
    assert store.get("sid-1") is None


def test_destroy_returns_rows_deleted(store):
    store.set("sid-1", live())
    assert store.destroy("sid-1") == 1
    assert store.destroy("sid-1") == 0
    assert store.get("sid-1") is None


def test_all_and_length_count_live_sessions_only(store):
    for i in range(5):
        store.set("live-%d" % i, live(i=i))
    store.set("dead", {"cookie": {"expires": in_(-60)}})
    assert store.length() == 5
    assert sorted(store.all()) == ["live-%d" % i for i in range(5)]
    assert {sid: sess["i"] for sid, sess in store.all().items()} == {"live-%d" % i: i for i in range(5)}


def test_clear_deletes_live_and_expired(store):
    store.set("a", live())
    store.set("b", {"cookie": {"expires": in_(-60)}})
    assert store.clear() == 2
    assert store.clear() == 0


def test_sweep_deletes_only_expired_rows_in_batches(make_store):
    store = make_store(sweep_batch_size=7)
    for i in range(30):
        store.set("dead-%d" % i, {"cookie": {"expires": in_(-60)}})
    for i in range(3):
        store.set("live-%d" % i, live())
    assert store.sweep() == 30
    assert sorted(store.all()) == ["live-0", "live-1", "live-2"]
    assert store.sweep() == 0


def fill_interleaved(store, pattern):
    """Rows whose keys interleave expired ("x") and live ("l") ones as the pattern says, in key order."""
    for i, kind in enumerate(pattern):
        sid = "k-%04d" % i
        store.set(sid, {"cookie": {"expires": in_(-60)}} if kind == "x" else live(i=i))
    return {"k-%04d" % i for i, kind in enumerate(pattern) if kind == "l"}


@pytest.mark.parametrize("pattern", [
    "xxxxlxxxxl" * 8,  # a backlog: MySQL walks it in key order
    "xllllllllll" * 8,  # mostly live: the expired index finds the few expired rows
    "x" * 40 + "l" * 60 + "x" * 20,  # the walk meets a live stretch and hands over to the index
])
def test_a_backlog_sweep_deletes_exactly_the_expired_rows(make_store, pattern):
    store = make_store(sweep_batch_size=8)
    live_sids = fill_interleaved(store, pattern)
    assert store.sweep() == pattern.count("x")
    assert set(store.all()) == live_sids
    assert store.stats()["expired"] == 0


def sweep_steps(store):
    """What a MySQL sweep ran: "expired" (keys read in expiry order), "window" (consecutive keys), "delete"."""
    sql, counter = store.dialect, Counter(store.db)
    store.sweep()
    names = {sql.sweep_expired_keys: "expired", sql.sweep_window[False]: "window", sql.sweep_window[True]: "window"}
    return [names.get(statement, "delete" if statement.startswith("DELETE") else statement)
            for statement in counter.statements]


@pytest.mark.parametrize("backend", ["mysql"])
def test_mysql_walks_a_backlog_in_key_order(make_store):
    """InnoDB keeps rows in key order: a backlog is deleted a window of consecutive keys at a time."""
    store = make_store(sweep_batch_size=10)
    fill_interleaved(store, "xxxxxxxxxl" * 10)  # 90 expired, 10 live
    # The first read of expired keys came back full: windows of 10 keys to the end of the table
    # (the last one empty), and no more reads of the expired index.
    assert sweep_steps(store) == ["expired"] + ["window", "delete"] * 10 + ["window"]
    assert store.stats()["expired"] == 0


@pytest.mark.parametrize("backend", ["mysql"])
def test_mysql_leaves_the_walk_where_few_rows_are_expired(make_store):
    store = make_store(sweep_batch_size=10)
    live_sids = fill_interleaved(store, "x" * 20 + "l" * 200)
    # Two windows of expired keys, one of live keys ends the walk, and the expired index finds
    # nothing more: no walk over the 200 live rows.
    assert sweep_steps(store) == ["expired"] + ["window", "delete"] * 2 + ["window", "expired"]
    assert set(store.all()) == live_sids


@pytest.mark.parametrize("backend", ["mysql"])
def test_mysql_sweep_without_a_backlog_reads_the_expired_index_only(make_store):
    store = make_store(sweep_batch_size=10)
    live_sids = fill_interleaved(store, "xlllllllll" * 5)
    assert sweep_steps(store) == ["expired", "delete"]
    assert set(store.all()) == live_sids


@pytest.mark.parametrize("backend", ["mysql"])
@pytest.mark.parametrize("batch_size", [50, 5], ids=["expired index", "key-order walk"])
def test_mysql_sweep_spares_a_row_saved_again_after_its_key_was_read(db, make_store, table_name, batch_size):
    """Keys are read without locks; the DELETE re-checks each row's expiry under its lock."""
    store = make_store(sweep_batch_size=batch_size)
    fill_interleaved(store, "x" * 30)
    other = PeeweeSessionStore(db, table_name=table_name, clear_interval=0)
    revived = live(back="again")
    original = store.db.execute_sql

    class ReadKeys:  # the keys as read, handed on after the session was saved again
        def __init__(self, row):
            self.row = row

        def fetchone(self):
            return self.row

    statements = store.dialect
    key_reads = {statements.sweep_expired_keys, *statements.sweep_window.values()}

    def revive_after_the_keys_are_read(sql, params=None, *args, **kwargs):
        cursor = original(sql, params, *args, **kwargs)
        if sql not in key_reads:
            return cursor
        row = cursor.fetchone()  # how many keys it read, the expired ones as a JSON array, the last key
        if row[0] and "k-0012" in json.loads(row[1]):
            other.set("k-0012", revived)  # a request saves that session between the read and the DELETE
        return ReadKeys(row)

    store.db.execute_sql = revive_after_the_keys_are_read
    assert store.sweep() == 29
    del store.db.execute_sql
    assert store.all() == {"k-0012": revived}


@contextlib.contextmanager
def holding_a_live_session(backend, tmp_path, store, sid):
    """Another connection holds a live session's row lock (session.locked(), as a request would) while the
    block runs on the store's connection, where waiting for a lock fails, and fast."""
    lock_timeout = {"mysql": "SET SESSION innodb_lock_wait_timeout = 2", "postgresql": "SET lock_timeout = '2s'"}
    holder_db = open_database(backend, tmp_path)
    try:
        holder = PeeweeSessionStore(holder_db, table_name=store.table_name, clear_interval=0)
        with holder.locked(sid) as found:
            assert found is not None
            with store.connection():
                store.db.execute_sql(lock_timeout[backend])
                yield
    finally:
        holder_db.close()


@pytest.mark.parametrize("backend", ["mysql"])
def test_mysql_backlog_sweep_does_not_wait_for_a_live_session_in_use(make_store, tmp_path):
    """A request holding a live session's row lock (session.locked()) doesn't hold up the sweep around it."""
    store = make_store(sweep_batch_size=10)
    live_sids = fill_interleaved(store, "xxxxlxxxxx" * 5)  # a backlog; k-0004, k-0014, ... are live
    with holding_a_live_session("mysql", tmp_path, store, "k-0014"):
        assert store.sweep() == 45
    assert set(store.all()) == live_sids


@pytest.mark.parametrize("backend", ["mysql"])
def test_mysql_sweep_in_a_transaction_ends_when_another_sweeper_took_the_rows(db, make_store, table_name, tmp_path):
    """A transaction's reads see its snapshot: the keys another sweeper deleted keep coming back."""
    store = make_store(sweep_batch_size=5)
    fill_interleaved(store, "l" * 10 + "x" * 30)
    other_db = open_database("mysql", tmp_path)
    try:
        other = PeeweeSessionStore(other_db, table_name=table_name, clear_interval=0)
        with store.connection(), db.atomic():
            assert store.length() == 10  # the snapshot starts here
            assert other.sweep() == 30  # on another connection
            batches = list(itertools.islice(store.sweep_batches(), 100))
        assert sum(batches) == 0 and len(batches) < 10
    finally:
        other_db.close()


@pytest.mark.parametrize("backend", ["mysql"])
def test_mysql_sweep_is_not_cut_short_by_group_concat_max_len(make_store):
    """MariaDB cuts JSON_ARRAYAGG at group_concat_max_len (MySQL's default is 1 KB): the sweep lifts it for its reads."""
    store = make_store(sweep_batch_size=200)
    fill_interleaved(store, "x" * 400 + "l" * 10)
    with store.connection():
        store.db.execute_sql("SET SESSION group_concat_max_len = 1024")  # about 100 of a read's 200 keys
        assert store.sweep() == 400
        assert store.db.execute_sql("SELECT @@SESSION.group_concat_max_len").fetchone()[0] == 1024
    assert store.stats()["expired"] == 0


@pytest.mark.parametrize("backend", ["mysql"])
@pytest.mark.parametrize("count, array", [(3, '["k-1"]'), (2, '["k-1",'), (2, None)], ids=["short", "cut", "null"])
def test_mysql_sweep_refuses_a_damaged_list_of_keys(make_store, count, array):
    """A list that doesn't hold as many keys as the read counted is never half-deleted: the sweep stops, saying why."""
    store = make_store()
    reader = peewee_sessions._KeyOrderSweep(store.db, store.dialect)
    with store.connection(), pytest.raises(peewee.DatabaseError, match="list of the sweep's %d keys came back damaged" % count):
        reader._read_keys("SELECT %s, %s, NULL", (count, array))


@pytest.mark.parametrize("backend", ["mysql"])
@pytest.mark.parametrize("batch_size", [2, 1000], ids=["key-order walk", "expired index"])
@pytest.mark.parametrize("latin1", ["table", "connection"])
def test_mysql_sweep_reads_keys_right_whatever_the_character_sets(db, make_store, table_name, batch_size, latin1):
    """A latin1 table (MariaDB's default before 11.6) or connection: the keys come back as stored."""
    if latin1 == "table":
        ddl = peewee_sessions.create_table_sql(db, table_name)
        with db.connection_context():
            db.execute_sql(ddl[0] + " DEFAULT CHARSET=latin1")
            for statement in ddl[1:]:
                db.execute_sql(statement)
        sweeping_db = db
    else:
        make_store()  # the table, in the database's default character set
        sweeping_db = peewee.MySQLDatabase(db.database, **dict(db.connect_params, charset="latin1"))
    try:
        store = PeeweeSessionStore(sweeping_db, table_name=table_name, create_table=False, clear_interval=0,
                                   sweep_batch_size=batch_size)
        for sid in ("plain", "é", "Ã©", "it's \\ \"q\""):
            store.set(sid, {"cookie": {"expires": in_(-60)}})
        store.set("ü-live", live())
        assert store.sweep() == 4
        assert set(store.all()) == {"ü-live"}
    finally:
        sweeping_db.close()
        if latin1 == "table":
            drop_table(db, table_name)  # made by hand: make_store drops only its own stores' tables


@pytest.mark.parametrize("backend", ["mysql"])
def test_mysql_walk_goes_on_after_the_last_key_of_each_window(make_store):
    """The walk's cursor is the window's last key, live or not: no key is read twice or skipped."""
    store = make_store(sweep_batch_size=10)
    fill_interleaved(store, "xxxxxxxxll" * 3)
    walk = peewee_sessions._KeyOrderSweep(store.db, store.dialect)
    with store.connection():
        assert walk.step(10) == (8, True)  # a full first read of the expired index: the walk's first window
        assert walk.cursor == "k-0009"  # live
        assert walk.step(10) == (8, True) and walk.cursor == "k-0019"


@pytest.mark.parametrize("backend", ["mysql"])
def test_a_mysql_server_without_json_arrayagg_is_refused_by_name_and_gets_no_table(db, table_name, monkeypatch):
    monkeypatch.setattr(peewee_sessions, "_MYSQL_FEATURE_PROBE", "SELECT NO_SUCH_FUNCTION(1)")
    with pytest.raises(SessionStoreError, match=r"needs MariaDB 10\.5\+ or MySQL 5\.7\.22\+ \(for JSON_ARRAYAGG\); "
                                                r"this server is [0-9]"):
        PeeweeSessionStore(db, table_name=table_name, clear_interval=0)
    assert not db.table_exists(table_name)


def fill_pages(store, pattern):
    """fill_interleaved with sessions of about 1 KB: a PostgreSQL page holds seven, so the rows span pages.

    The expired rows expired a second apart, in no particular order."""
    spread = random.Random(len(pattern)).sample(range(len(pattern)), len(pattern))
    for i, kind in enumerate(pattern):
        expires = in_(-60 - spread[i]) if kind == "x" else in_(3600)
        store.set("k-%04d" % i, {"cookie": {"expires": expires}, "padding": "p" * 1000})
    return {"k-%04d" % i for i, kind in enumerate(pattern) if kind == "l"}


def page_sweep_steps(store, slices=None):
    """What a PostgreSQL sweep ran: "expired" (a batch in expiry order), "size" (the table's pages),
    (first page, end page) for each window of pages it swept, and "slice" for each read of a slice
    of the expired index (whose bounds go into `slices`, if given)."""
    sql, steps = store.dialect, []
    original = store.db.execute_sql

    def recording(statement, params=None, *args, **kwargs):
        if statement == sql.index_slice and slices is not None:
            slices.append(tuple(params))
        if statement == sql.sweep_pages:
            steps.append(tuple(int(tid.strip("()").split(",")[0]) for tid in params[:2]))
        else:
            steps.append({sql.sweep_batch: "expired", sql.table_pages: "size", sql.index_slice: "slice"}
                         .get(statement, statement))
        return original(statement, params, *args, **kwargs)

    store.db.execute_sql = recording
    try:
        store.sweep()
    finally:
        del store.db.execute_sql
    return steps


def table_pages(store):
    with store.connection():
        return store.db.execute_sql("SELECT pg_relation_size(%s) / current_setting('block_size')::int",
                                    (store.table_name,)).fetchone()[0]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_walks_a_backlog_in_page_order(make_store):
    """A table's rows sit in the order they were written: a backlog is deleted a window of pages at a time."""
    store = make_store(sweep_batch_size=10)
    live_sids = fill_pages(store, "xxxxxxxxxl" * 20)  # 180 expired, 20 live, on about 30 pages
    pages = table_pages(store)
    steps = page_sweep_steps(store)
    # The first batch in expiry order came back full: then windows of pages from the first page to
    # the last, each the next or the rest of a window that held a whole batch, then the index's
    # slices (see the next test), and nothing more.
    assert steps[:2] == ["expired", "size"]
    windows = [step for step in steps[2:] if step != "slice"]
    assert steps[2:] == windows + ["slice"] * (len(steps) - 2 - len(windows))
    assert windows[0][0] == 0 and windows[-1][1] == pages
    for (previous_first, previous_end), (first, _) in zip(windows, windows[1:]):
        assert first in (previous_end, previous_first)
    assert set(store.all()) == live_sids and store.stats()["expired"] == 0


def buffers_of_a_sweep_batch(store):
    """The pages (index and table, counted per visit) one sweep batch reads, by EXPLAIN (ANALYZE, BUFFERS).

    The scan marks dead entries as it goes, so a second call would count fewer."""
    sql = store.dialect
    with store.connection(), store.db.atomic() as transaction:
        plan = [row[0] for row in store.db.execute_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql.sweep_batch,
                                                         (sql.now(), store.sweep_batch_size))]
        transaction.rollback()
    buffers = next(line for line in plan if "Buffers:" in line)
    return sum(int(count) for count in re.findall(r"(?:hit|read)=(\d+)", buffers))


def older_snapshots(store):
    """Other transactions in this database holding a snapshot: while one is open, no dead row is dead to all."""
    with store.connection():
        return store.db.execute_sql(
            "SELECT pid, application_name, state, query FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_xmin IS NOT NULL").fetchall()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_walk_marks_its_rows_index_entries_so_the_next_sweep_skips_them(make_store):
    """The rows a walk deleted keep their entries in the expired index until vacuum. Unmarked, the next
    sweep's first batch would visit each one's page in one statement (seconds for a million rows)."""
    store = make_store(sweep_batch_size=10)
    live_sids = fill_pages(store, "xxxxxxxxxl" * 80)  # 720 expired rows on about 115 pages
    walked = 720 - 10  # all but the first batch's
    slices = page_sweep_steps(store).count("slice")
    assert walked / 20 <= slices <= walked / 10 + 1  # about a batch of entries each
    assert buffers_of_a_sweep_batch(store) < walked / 10, (  # a few index pages, not a page per entry
        "if another transaction held an older snapshot, nothing could be marked: %r" % (older_snapshots(store),))
    assert set(store.all()) == live_sids


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_walk_in_an_open_transaction_reads_no_index_slices(make_store):
    """Its deletes are not committed yet, so there is nothing the slices could mark."""
    store = make_store(sweep_batch_size=10)
    live_sids = fill_pages(store, "xxxxxxxxxl" * 20)
    with store.connection(), store.db.atomic():
        steps = page_sweep_steps(store)
    assert len(steps) > 2 and "slice" not in steps
    assert set(store.all()) == live_sids and store.stats()["expired"] == 0


def insert_expired(store, ages):
    """Rows that expired `ages` seconds ago, written in this order (so on the table's pages in this order)."""
    with store.connection():
        store.db.execute_sql(
            """INSERT INTO "%s" (sid, sess, expired) SELECT 'k-' || n, '{"cookie":{}}', now() - make_interval(secs => age)"""
            " FROM unnest(%%s::float8[]) WITH ORDINALITY AS rows(age, n)" % store.table_name, (ages,))
        return sorted(row[0] for row in store.db.execute_sql('SELECT expired FROM "%s"' % store.table_name))


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("spread", ["even", "burst"])
def test_postgresql_index_slices_hold_about_a_batch_however_expiries_are_spread(make_store, spread):
    """Each read of the index steps over about a batch of the walk's entries: with 100,000 expiries spread
    evenly over two weeks (where windows of a thousand rows, sampled alike, would sample alike), or with a burst
    (a crawler's sessions, say: 38,000 that expired within a minute, among 2,000 spread over a year),
    which slices of even width would take in one statement."""
    store = make_store(sweep_batch_size=1000)
    rng = random.Random(7)
    if spread == "even":
        ages = [rng.uniform(60, 14 * 86400) for _ in range(100000)]
    else:
        ages = [rng.uniform(3600, 365 * 86400) for _ in range(2000)] + [60 + i / 640 for i in range(38000)]
        rng.shuffle(ages)
    walked = insert_expired(store, ages)[1000:]  # the first batch, in expiry order, takes the 1,000 oldest
    slices = []
    page_sweep_steps(store, slices)
    assert slices[0][0] <= walked[0] and slices[-1][1] >= walked[-1]
    assert all(previous[1] == current[0] for previous, current in zip(slices, slices[1:]))  # no gaps
    per_slice = [bisect.bisect_right(walked, last) - bisect.bisect_left(walked, first) for first, last in slices]
    assert max(per_slice) <= 2 * 1000, per_slice
    assert store.stats()["expired"] == 0


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_leaves_the_walk_when_it_reads_more_pages_than_it_deletes_rows(make_store):
    """A full first batch on a table of mostly live sessions: the walk stops, and expiry order finds the rest."""
    store = make_store(sweep_batch_size=10)
    live_sids = fill_pages(store, "x" * 20 + "l" * 300)  # 20 expired rows on the first 3 pages of about 46
    pages = table_pages(store)
    # The walk deletes the 10 rows the first batch left, then reads live pages until it has read more
    # pages than it deleted rows (about 10), and hands over to the expired index.
    steps = page_sweep_steps(store)
    assert steps[:2] == ["expired", "size"] and steps[-1] == "expired"
    windows = steps[2:-1]
    assert windows and windows[-1][1] <= 16 < pages
    assert set(store.all()) == live_sids


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_page_walk_deletes_at_most_a_batch_per_statement(make_store):
    """A window that holds more expired rows than a batch is taken a batch at a time."""
    store = make_store(sweep_batch_size=5)
    live_sids = fill_pages(store, "x" * 100 + "l" * 5)  # the first window, 8 pages, holds 56 expired rows
    walked = Counter(store.db)
    counts = list(store.sweep_batches())
    assert store.dialect.sweep_pages in walked.statements
    assert sum(counts) == 100 and max(counts) == 5
    assert set(store.all()) == live_sids


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_page_walk_leaves_a_child_table_alone(db, make_store, table_name):
    """A table that INHERITS the sessions table shares row positions with it, not rows."""
    store = make_store(sweep_batch_size=10)
    fill_pages(store, "x" * 60)
    child = table_name + "_child"
    with db.connection_context():
        db.execute_sql('CREATE TABLE "%s" () INHERITS ("%s")' % (child, table_name))
        try:
            for i in range(60):
                db.execute_sql('INSERT INTO "%s" (sid, sess, expired) VALUES (%%s, %%s, %%s)' % child,
                               ("child-%d" % i, '{"cookie":{},"padding":"%s"}' % ("p" * 1000),  # its pages 0-8
                                datetime.datetime.now(datetime.timezone.utc)
                                + datetime.timedelta(hours=1)))
            steps = page_sweep_steps(store)
            assert steps[:2] == ["expired", "size"] and len(steps) > 2  # it walked
            assert db.execute_sql('SELECT COUNT(*) FROM "%s"' % child).fetchone()[0] == 60
            assert db.execute_sql('SELECT COUNT(*) FROM ONLY "%s"' % table_name).fetchone()[0] == 0
        finally:
            db.execute_sql('DROP TABLE "%s"' % child)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_sweep_without_a_backlog_reads_the_expired_index_only(make_store):
    store = make_store(sweep_batch_size=10)
    live_sids = fill_pages(store, "xlllllllll" * 5)
    assert page_sweep_steps(store) == ["expired"]
    assert set(store.all()) == live_sids


def pages_only_in_expiry_order(store):
    """Make PostgreSQL look older than 14 to the sweep, which then never walks pages."""
    sql = store.dialect
    if sql.name == "postgresql":
        sql.table_pages = sql.table_pages.replace(">= 140000", ">= 990000")  # a version no server has yet


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_before_14_sweeps_a_backlog_in_expiry_order(make_store):
    """TID range scans came in PostgreSQL 14: an older server would read the whole table for each window."""
    store = make_store(sweep_batch_size=10)
    pages_only_in_expiry_order(store)
    live_sids = fill_pages(store, "xxxxxxxxxl" * 5)
    assert page_sweep_steps(store) == ["expired", "size"] + ["expired"] * 4
    assert set(store.all()) == live_sids


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_page_walk_does_not_wait_for_a_live_session_in_use(make_store, tmp_path):
    """A request holding a live session's row lock (session.locked()) doesn't hold up the walk over its page."""
    store = make_store(sweep_batch_size=10)
    live_sids = fill_pages(store, "xxxxlxxxxx" * 5)  # a backlog; k-0004, k-0014, ... are live
    with holding_a_live_session("postgresql", tmp_path, store, "k-0014"):
        steps = page_sweep_steps(store)
    assert steps[:2] == ["expired", "size"] and len(steps) > 2  # it walked
    assert set(store.all()) == live_sids and store.stats()["expired"] == 0


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_page_walk_skips_rows_another_sweeper_holds(db, make_store, table_name, tmp_path):
    """Two sweepers walking the same pages: neither waits for the other, and each row goes once."""
    store = make_store(sweep_batch_size=10)
    live_sids = fill_pages(store, "xxxxxxxxxl" * 5)
    other_db = open_database("postgresql", tmp_path)
    try:
        with other_db.atomic():  # another sweeper, mid-statement: it holds k-0003's row lock
            other_db.execute_sql("SELECT 1 FROM %s WHERE sid = 'k-0003' FOR UPDATE" % table_name)
            with store.connection():
                store.db.execute_sql("SET lock_timeout = '2s'")
                steps = page_sweep_steps(store)
            assert steps[:2] == ["expired", "size"] and len(steps) > 2  # it walked
            assert store.stats()["expired"] == 1  # all but the held row
        assert store.sweep() == 1  # the next sweep takes the row it skipped
    finally:
        other_db.close()
    assert set(store.all()) == live_sids


def expire_rows(store, count):
    for i in range(count):
        store.set("dead-%d" % i, {"cookie": {"expires": in_(-60)}})


class FakeTime:
    """Stands in for the module's `time` in a sweep: batch i takes durations[i] seconds; rests are recorded."""

    def __init__(self, durations):
        self.durations, self.now, self.readings, self.rests = iter(durations), 0.0, 0, []

    def perf_counter(self):
        self.readings += 1
        if self.readings % 2 == 0:  # a batch's second reading: it took the next duration
            self.now += next(self.durations)
        return self.now

    def sleep(self, seconds):
        self.rests.append(seconds)


def test_sweep_rests_twice_as_long_as_each_batch_took(make_store, monkeypatch):
    """The database is busy with the sweep at most a third of the time, and the sweep ends without a rest."""
    store = make_store(sweep_batch_size=10)
    pages_only_in_expiry_order(store)  # the pacing is the same however batches are made; these count rows
    expire_rows(store, 35)
    fake = FakeTime([0.004, 0.02, 0.03, 0.001])
    monkeypatch.setattr(peewee_sessions, "time", fake)
    assert list(store.sweep_batches()) == [10, 10, 10, 5]
    assert fake.rests == pytest.approx([0.008, 0.04, 0.06])  # none after the last, short batch
    assert store.stats()["expired"] == 0


def test_a_slow_batch_halves_the_next_and_a_quick_one_doubles_it(make_store, monkeypatch):
    store = make_store(sweep_batch_size=200)
    pages_only_in_expiry_order(store)
    expire_rows(store, 700)
    # Over 50 ms: half as many next time (down to 50 rows); 10 to 50 ms: as many; under 10 ms: twice as many.
    monkeypatch.setattr(peewee_sessions, "time", FakeTime([0.06, 0.06, 0.06, 0.02, 0.001, 0.001, 0.001]))
    assert list(store.sweep_batches()) == [200, 100, 50, 50, 50, 100, 150]
    assert store.stats()["expired"] == 0


def test_context_manager_closes_the_store(make_store):
    with make_store(clear_interval=3600) as store:
        store.set("a", live())
        timer = store._sweeper.timer
        assert timer.is_alive()
    timer.join(5)
    assert not timer.is_alive()


def test_the_store_leaves_the_connection_as_it_found_it(db, store):
    db.close()
    store.set("a", live())
    assert store.get("a") is not None
    assert db.is_closed()
    db.connect()
    store.set("b", live())
    assert not db.is_closed()


# -- patch: a merge of some keys into the row as it is now ------------------------------------

ODD_KEYS = ['q"uote', "back\\slash", "dot.ted", "[0]", "$", "", "ünï", "🎉", "new\nline", "sp ace", "*", "nul\x00"]


def test_patch_sets_and_removes_keys_and_leaves_the_rest(store):
    store.set("sid-1", live(keep=1, change=2, drop=3, nested={"a": [1, 2]}))
    assert store.patch("sid-1", {"change": {"x": None}, "added": [1.5, "two", None, True]}, ["drop"]) is True
    found = store.get("sid-1")
    assert {key: found[key] for key in found if key != "cookie"} == {
        "keep": 1, "change": {"x": None}, "nested": {"a": [1, 2]}, "added": [1.5, "two", None, True]}


def test_patch_keeps_key_order(store):
    store.set("sid-1", live(first=1, second=2, third=3))
    store.patch("sid-1", {"second": 20, "fourth": 4, "cookie": live()["cookie"]}, ["first"])
    assert list(store.get("sid-1")) == ["cookie", "second", "third", "fourth"]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_patch_handles_any_key(store, key):
    store.set("sid-1", live(**{"other": 0, key: "old"}))
    store.patch("sid-1", {key: {"new": key}})
    assert store.get("sid-1")[key] == {"new": key} and store.get("sid-1")["other"] == 0
    store.patch("sid-1", {}, [key])
    assert key not in store.get("sid-1") and store.get("sid-1")["other"] == 0


def test_patch_with_a_cookie_moves_the_expiry_and_without_keeps_it(store):
    store.set("sid-1", {"cookie": {"expires": "2090-01-01T00:00:00.000Z"}})
    store.patch("sid-1", {"n": 1})
    assert stored_expiry(store, "sid-1") == datetime.datetime(2090, 1, 1, tzinfo=UTC)
    store.patch("sid-1", {"cookie": {"expires": "2095-01-01T00:00:00.000Z"}})
    assert stored_expiry(store, "sid-1") == datetime.datetime(2095, 1, 1, tzinfo=UTC)


def test_patch_never_creates_or_revives(store):
    assert store.patch("ghost", {"n": 1}) is False
    store.set("dead", {"cookie": {"expires": in_(-5)}})
    assert store.patch("dead", {"n": 1, "cookie": live()["cookie"]}) is False
    assert store.get("ghost") is None and store.get("dead") is None


def test_patch_refuses_unstorable_values_and_keeps_the_row(store):
    store.set("sid-1", live(n=1))
    with pytest.raises(TypeError, match=r"session\['bad'\]"):
        store.patch("sid-1", {"n": 2, "bad": {1, 2}})
    assert store.get("sid-1")["n"] == 1


def test_patch_checks_the_merged_session_against_the_size_limit(make_store):
    # Each patch alone is small; what they add up to in the row is not.
    store = make_store(max_session_size=1000)
    store.set("sid-1", live(first="x" * 500))
    with pytest.raises(ValueError, match="max_session_size"):
        store.patch("sid-1", {"second": "y" * 500})
    assert store.get("sid-1") == live(first="x" * 500) | {"cookie": store.get("sid-1")["cookie"]}
    assert store.patch("sid-1", {"second": "y" * 500}, ["first"]) is True  # a swap that fits is fine
    assert "first" not in store.get("sid-1") and store.get("sid-1")["second"] == "y" * 500


def duplicate_row(store, sid):
    """The app's own statement failing inside a store block: a second row with the same primary key."""
    p = store.db.param
    store.db.execute_sql("INSERT INTO %s (sid, sess, expired) VALUES (%s, %s, %s)" % (store.table_name, p, p, p),
                         (sid, "{}", "2099-01-01 00:00:00"))


def test_an_error_of_the_apps_own_inside_locked_reaches_it_as_raised(store):
    store.set("sid-1", live(n=0))
    with pytest.raises(peewee.IntegrityError):  # not SessionStoreError: the app's except clause must run
        with store.locked("sid-1"):
            store.patch("sid-1", {"n": 1})
            duplicate_row(store, "sid-1")
    assert store.get("sid-1")["n"] == 0  # the block's patch was rolled back with it
    with pytest.raises(peewee.IntegrityError):
        with store.connection():
            duplicate_row(store, "sid-1")


def test_locked_holds_the_row_until_the_block_ends(store):
    store.set("sid-1", live(n=0))
    with store.locked("sid-1") as (sess, expiry):
        assert sess["n"] == 0
        store.patch("sid-1", {"n": 1})
    assert store.get("sid-1")["n"] == 1
    with store.locked("missing") as found:
        assert found is None


def test_sessions_over_the_size_limit_are_refused_and_nothing_changes(make_store):
    store = make_store(max_session_size=1000)
    store.set("sid-1", live(n=1))
    with pytest.raises(ValueError, match="max_session_size"):
        store.set("sid-1", live(n=2, blob="x" * 2000))
    with pytest.raises(ValueError, match="max_session_size"):
        store.patch("sid-1", {"blob": "x" * 2000})
    assert store.get("sid-1") == store.get("sid-1") and store.get("sid-1")["n"] == 1 and "blob" not in store.get("sid-1")


# -- What is an outage (SessionStoreUnavailable, a 503) and what is not ------------------------


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
@pytest.mark.parametrize("wrong", ["user", "database"])
def test_a_refused_log_in_is_a_store_error_not_an_outage(backend, db, table_name, wrong):
    """A wrong role or a missing database is a setting to fix: no retry brings the store back."""
    params = dict(db.connect_params)
    params["user" if wrong == "user" else "database"] = "no_such_" + wrong + "_x"
    name = params.pop("database", db.database)
    other = type(db)(name, **params)
    with pytest.raises(peewee_sessions.SessionStoreError, match="refused the log-in") as caught:
        PeeweeSessionStore(other, table_name=table_name, clear_interval=0)
    assert not isinstance(caught.value, peewee_sessions.SessionStoreUnavailable)


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_a_server_that_does_not_answer_is_an_outage(backend, db, table_name):
    other = type(db)(db.database, **dict(db.connect_params, port=1))
    store = PeeweeSessionStore(other, table_name=table_name, clear_interval=0)  # checked on first use
    with pytest.raises(peewee_sessions.SessionStoreUnavailable):
        store.get("sid")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_locked_sqlite_database_is_an_outage(backend, db, table_name, tmp_path):
    store = PeeweeSessionStore(peewee.SqliteDatabase(db.database, timeout=0.1), table_name=table_name,
                               clear_interval=0)
    store.set("sid", live())
    holder = peewee.SqliteDatabase(db.database)
    with holder.connection_context(), holder.atomic("IMMEDIATE"):  # another process holds the write lock
        with pytest.raises(peewee_sessions.SessionStoreUnavailable, match="locked"):
            store.set("sid", live(n=2))
    store.close()


def test_a_table_dropped_under_the_store_is_a_store_error_not_an_outage(db, store):
    store.set("sid", live())
    drop_table(db, store.table_name)
    with pytest.raises(peewee_sessions.SessionStoreError) as caught:
        store.get("sid")
    assert not isinstance(caught.value, peewee_sessions.SessionStoreUnavailable)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("pooled", [False, True])
def test_a_sqlite_file_in_a_missing_folder_is_refused_when_the_store_is_made(backend, tmp_path, table_name,
                                                                             pooled):
    """Not a store that starts and then answers every request as unavailable."""
    from playhouse.pool import PooledSqliteDatabase

    path = tmp_path / "no_such_folder" / "x.db"
    db = PooledSqliteDatabase(str(path)) if pooled else peewee.SqliteDatabase(str(path))
    expected = "the folder %s does not exist" % re.escape(str(path.parent))
    with pytest.raises(SessionStoreError, match=expected):
        PeeweeSessionStore(db, table_name=table_name, clear_interval=0)
    assert not path.parent.exists()
    for fine in (":memory:", "", str(tmp_path / "x.db")):
        PeeweeSessionStore(peewee.SqliteDatabase(fine), table_name=table_name, clear_interval=0).close()


@pytest.fixture
def jsonb_store(db, table_name):
    """A store on a PostgreSQL table made by hand with `sess jsonb` (the README says what changes)."""
    with db.connection_context():
        db.execute_sql('CREATE TABLE "%s" (sid varchar(255) NOT NULL PRIMARY KEY, sess jsonb NOT NULL, '
                       'expired timestamp with time zone NOT NULL)' % table_name)
    store = PeeweeSessionStore(db, table_name=table_name, create_table=False, clear_interval=0)
    yield store
    store.close()
    drop_table(db, table_name)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_jsonb_column_keeps_what_the_readme_says(backend, jsonb_store):
    """What the README's "The table" says a jsonb column changes, and nothing else."""
    store = jsonb_store
    kept = {"text": "Zoë 🎉 \" ' < > \\", "n": 3, "ratio": 0.1, "tiny": 5e-324, "small": 1e-07, "one": 1.0,
            "big_int": 10 ** 20, "list": [1, "a", None, True, {"x": []}], "none": None}
    changed = {"huge": 1e308, "e20": 1.2345678901234568e+20, "negative_huge": -1.5e300,
               "negative_zero": -0.0}
    store.set("sid", dict(live(), **kept, **changed))
    got = store.get("sid")
    assert {key: got[key] for key in kept} == kept
    assert all(type(got[key]) is type(value) for key, value in kept.items())
    # Written with an exponent of 16 or more: read back as the int with those digits; float() undoes it.
    assert got["huge"] == 10 ** 308 and float(got["huge"]) == 1e308
    assert got["e20"] == 123456789012345680000 and float(got["e20"]) == 1.2345678901234568e+20
    assert type(got["negative_huge"]) is int and float(got["negative_huge"]) == -1.5e300
    assert str(got["negative_zero"]) == "0.0"  # the sign goes (JSON.stringify drops it too)
    # Keys come back in jsonb's order (shorter keys first, then by bytes), not as written.
    assert list(got) == sorted(got, key=lambda key: (len(key.encode()), key.encode()))
    for bad in ("nul \x00 byte", "lone \ud800 surrogate"):  # PostgreSQL's error, not a TypeError
        with pytest.raises(SessionStoreError):
            store.set("sid", dict(live(), s=bad))
    assert store.get("sid") == got


@pytest.mark.parametrize("backend", ["postgresql"])
def test_the_plugin_counts_on_a_jsonb_column(backend, jsonb_store):
    import webtest

    from conftest import build_app

    client = webtest.TestApp(build_app(jsonb_store)[0])
    assert [client.get("/count").text for _ in range(3)] == ["1", "2", "3"]


@pytest.mark.parametrize("backend, setting", [
    ("mysql", {"charset": "nope"}), ("mysql", {"read_timeout": "x"}),
    ("postgresql", {"sslmode": "nope"}), ("postgresql", {"bogus": 1}),
])
def test_a_connection_setting_the_driver_refuses_is_a_store_error(db, table_name, setting):
    """Not an AttributeError from inside PyMySQL, nor an outage retried on every request."""
    other = type(db)(db.database, **dict(db.connect_params, password="s3cret-pw", **setting))
    with pytest.raises(SessionStoreError) as caught:
        PeeweeSessionStore(other, table_name=table_name, clear_interval=0)
    assert not isinstance(caught.value, peewee_sessions.SessionStoreUnavailable)
    assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_sqlite_path_that_is_a_folder_is_refused_when_the_store_is_made(backend, tmp_path, table_name):
    with pytest.raises(SessionStoreError, match="is a folder"):
        PeeweeSessionStore(peewee.SqliteDatabase(str(tmp_path)), table_name=table_name, clear_interval=0)


def test_create_table_sql_takes_the_url_schemes_names_too():
    assert peewee_sessions.create_table_sql("postgres") == peewee_sessions.create_table_sql("postgresql")
    assert peewee_sessions.create_table_sql("mariadb") == peewee_sessions.create_table_sql("mysql")


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
@pytest.mark.direct_connection
def test_a_connection_the_server_kills_is_an_outage(backend, db, store, tmp_path):
    """Kills only this test's own connection (pg_terminate_backend, KILL): the servers serve others."""
    from conftest import open_database

    store.set("sid", live())
    own_id = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}[backend]
    kill = {"postgresql": "SELECT pg_terminate_backend(%s)", "mysql": "KILL %s"}[backend]
    killer = open_database(backend, tmp_path)
    with store.connection():  # the app's connection, which a locked() block runs on
        victim = store.db.execute_sql(own_id).fetchone()[0]
        with killer.connection_context():
            killer.execute_sql(kill % int(victim))
        with pytest.raises(peewee_sessions.SessionStoreUnavailable):
            with store.locked("sid"):
                pass
    store.db.close()  # peewee keeps the dead connection until it is closed
    assert store.get("sid") is not None  # the next connection works
