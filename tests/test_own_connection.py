"""The store's own connection per thread: kept between requests, replaced once when the server dropped
it, closed when its thread ends, never shared with a forked child, never used in the app's transaction."""

import logging
import os
import threading
import weakref

import peewee
import pytest

from conftest import Counter, build_app, drop_table, open_database, open_pooled_database, server_url
from peewee_sessions import PeeweeSessionStore, SessionStoreUnavailable

SESS = {"cookie": {"originalMaxAge": 86400000}, "n": 1}
BACKEND_ID = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}
KILL = {"postgresql": "SELECT pg_terminate_backend(%s)", "mysql": "KILL %s"}


def own_backend_id(store, backend):
    return store._own_db.execute_sql(BACKEND_ID[backend]).fetchone()[0]


def kill_from_another_connection(backend, backend_id):
    """End a server session as a restart or an idle timeout would, without stopping the shared server."""
    from playhouse.db_url import connect

    other = connect(server_url(backend))
    with other.connection_context():
        other.execute_sql(KILL[backend], (backend_id,))


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
@pytest.mark.direct_connection
def test_a_connection_the_server_dropped_is_replaced_and_the_statement_run_again(web, backend):
    client, plugin, store = web
    assert client.get("/count").text == "1"
    before = own_backend_id(store, backend)
    kill_from_another_connection(backend, before)
    counter = Counter(store)
    assert client.get("/count").text == "2"  # the request that finds it dead fails nothing
    statements = [sql.split()[0] for sql in counter.statements]
    assert statements == ["SELECT", "SELECT", "UPDATE"]  # the read twice
    assert own_backend_id(store, backend) != before
    assert client.get("/count").text == "3"


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
@pytest.mark.direct_connection
def test_a_statement_failing_twice_is_one_unavailable_error_and_the_next_one_reconnects(store, backend):
    from peewee_sessions import SessionStoreUnavailable

    store.set("s1", SESS)
    own = store._own_db
    original = own.execute_sql

    def always_killed(sql, params=None):
        kill_from_another_connection(backend, own.execute_sql.__wrapped__(BACKEND_ID[backend]).fetchone()[0])
        return original(sql, params)

    always_killed.__wrapped__ = original
    own.execute_sql = always_killed
    with pytest.raises(SessionStoreUnavailable):
        store.get("s1")
    own.execute_sql = original
    assert store.get("s1")["n"] == 1


def test_an_error_that_is_not_a_lost_connection_is_not_retried(store):
    from peewee_sessions import SessionStoreError

    counter = Counter(store)
    with pytest.raises(SessionStoreError):
        store._execute("SELECT no_such_column FROM " + store.dialect.table, ())
    assert len(counter) == 1
    assert store.get("missing") is None  # the connection is still good


def test_a_thread_that_ends_hands_its_connection_to_the_next_one(store):
    """A server may start a thread per request: threads that end leave their connections to the next."""
    store.set("s1", SESS)
    own = store._own_db
    connects, original = [], own._connect
    own._connect = lambda: connects.append(1) or original()
    together = threading.Barrier(4)

    def request(at_once):
        if at_once:
            together.wait()
        store.get("s1")
        if at_once:
            together.wait()  # the four hold a connection each at the same time

    for at_once, count in ((True, 4), (False, 8)):
        threads = [threading.Thread(target=request, args=(at_once,)) for _ in range(count)]
        for thread in threads:
            thread.start()
            if not at_once:
                thread.join()
        for thread in threads:
            thread.join()
    assert len(connects) == 4  # as many as ran at once, then reused
    assert len(own._state.spares.connections) == 4
    store.close()
    assert own._state.spares.connections == []  # closed with the store


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])  # sqlite3 connections take no weak reference
def test_connections_beyond_the_spares_close_when_their_threads_end(store, monkeypatch):
    import peewee_sessions

    monkeypatch.setattr(peewee_sessions, "_MAX_SPARES", 0)
    store.set("s1", SESS)
    connections = []

    def request():
        for _ in range(3):
            store.get("s1")
        connections.append(weakref.ref(store._own_db._state.conn))

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(connections) == 4
    assert all(ref() is None for ref in connections)  # closed with their threads, no gc needed


def test_the_apps_own_connect_and_close_cycle_is_unaffected(web):
    """peewee's documented per-request hooks: db.connect() before, db.close() after, on the same database."""
    import bottle

    client, plugin, store = web
    app = client.app
    app.add_hook("before_request", lambda: store.db.connect())
    app.add_hook("after_request", lambda: store.db.close())
    for n in range(1, 4):
        assert client.get("/count").text == str(n)
        assert store.db.is_closed()
    assert client.get("/plain").text == "no session here"
    assert store.db.is_closed()
    assert isinstance(app, bottle.Bottle)


def test_the_store_joins_the_apps_transaction(store):
    """Inside the app's transaction the store uses the app's connection: it commits or rolls back with it."""
    db = store.db
    with db.atomic() as transaction:
        store.set("s1", SESS)
        assert store.get("s1")["n"] == 1  # seen inside (on SQLite: no wait for the write lock it holds)
        transaction.rollback()
    assert store.get("s1") is None
    with db.atomic():
        store.set("s2", SESS)
    assert store.get("s2")["n"] == 1
    db.close()


def test_session_locked_joins_the_apps_transaction_and_saves_in_it(make_web):
    client, plugin, app = make_web()
    db = plugin.store.db

    @app.get("/locked-then-fail")
    def locked_then_fail(session):
        with db.atomic() as transaction:
            with session.locked():
                session["n"] = session.get("n", 0) + 100
            transaction.rollback()  # the app undoes its transaction: the block's save with it
        return "ok"

    client.get("/count")
    client.get("/locked-then-fail")
    assert client.get("/read").text == "1"
    db.close()


def test_a_database_proxy(backend, tmp_path, table_name):
    real = open_database(backend, tmp_path)
    proxy = peewee.DatabaseProxy()
    store = PeeweeSessionStore(proxy, table_name=table_name, clear_interval=0)
    proxy.initialize(real)
    try:
        store.set("s1", SESS)
        assert store.get("s1")["n"] == 1
        assert store._own_db is not None or backend == "sqlite"
        assert real.is_closed()
    finally:
        store.close()
        drop_table(real, table_name)


def test_a_pooled_database_lends_none_of_its_connections(backend, tmp_path, table_name):
    pooled = open_pooled_database(backend, tmp_path, max_connections=2)
    store = PeeweeSessionStore(pooled, table_name=table_name, clear_interval=0)
    try:
        import webtest

        app, plugin = build_app(store)
        client = webtest.TestApp(app)
        for n in range(1, 4):
            assert client.get("/count").text == str(n)
        assert not pooled._in_use  # nothing checked out of the app's pool
        assert not type(store._own_db).__name__.startswith("Pooled")
    finally:
        store.close()
        drop_table(pooled, table_name)
        pooled.close_all()


def test_sqlite_in_rollback_journal_mode_uses_the_apps_connection_and_says_why_once(tmp_path, table_name,
                                                                                    caplog):
    db = peewee.SqliteDatabase(str(tmp_path / "journal.sqlite"))  # the default: journal_mode=delete
    with caplog.at_level(logging.WARNING, logger="peewee_sessions"):
        store = PeeweeSessionStore(db, table_name=table_name, clear_interval=0)
        store.set("s1", SESS)
        assert store.get("s1")["n"] == 1
    warnings = [r.getMessage() for r in caplog.records if "journal mode" in r.getMessage()]
    assert len(warnings) == 1
    assert "'journal_mode': 'wal'" in warnings[0] and "delete journal mode" in warnings[0]
    assert store._own_db is None
    assert db.is_closed()  # opened and closed around each statement, as the app's connection was before
    import webtest

    app, plugin = build_app(store)
    client = webtest.TestApp(app)
    client.get("/count")
    original, opened = db.connect, []
    db.connect = lambda *args, **kwargs: opened.append(original(*args, **kwargs)) or opened[-1]
    assert client.get("/count").text == "2"  # a read and a write: on one connection, opened once
    assert opened.count(True) == 1 and db.is_closed()
    with db.connection_context():
        assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "delete"  # the file is left as it was
    store.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_in_wal_mode_keeps_its_own_connection_even_while_the_app_reads(store):
    """In WAL mode the app's open read (a cursor not fully read) doesn't block the store's write."""
    for n in range(3):
        store.set("s%d" % n, SESS)
    db = store.db
    cursor = db.execute_sql("SELECT sid FROM %s" % store.dialect.table)
    cursor.fetchone()  # a read left open on the app's connection
    store.set("s9", SESS)
    assert store.get("s9")["n"] == 1
    cursor.fetchall()
    db.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(store, backend):
    store.set("s1", SESS)
    parent_connection = store._own_db._state.conn if store._own_db else None
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            ok = store.get("s1")["n"] == 1
            child_connection = store._own_db._state.conn if store._own_db else None
            code = 0 if ok and (child_connection is None or child_connection is not parent_connection) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.set("s2", SESS)
    assert store.get("s2")["n"] == 1
    if parent_connection is not None:  # survived the child: not dropped and replaced by _run
        assert store._own_db._state.conn is parent_connection


def test_a_pool_with_no_free_connection_is_an_unavailable_store(backend, tmp_path, table_name):
    """playhouse.pool's MaxConnectionsExceeded is a ValueError: it must come out as the store's own error.

    Only what runs in a transaction (locked(), a merge) takes a connection of the app's pool."""
    threads = {"check_same_thread": False} if backend == "sqlite" else {}
    db = open_pooled_database(backend, tmp_path, max_connections=1, **threads)
    store = PeeweeSessionStore(db, table_name=table_name, clear_interval=0)
    holding, release = threading.Event(), threading.Event()

    def hold_the_only_connection():
        with db.connection_context():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    try:
        assert holding.wait(10)
        if store._own_db is not None:  # (not SQLite in rollback-journal mode, as this pool opens it)
            assert store.get("anyone") is None  # the store's own connection: not the pool's
        with pytest.raises(SessionStoreUnavailable, match="pool"):
            with store.locked("anyone"):
                pass
    finally:
        release.set()
        holder.join()
        store.close()
        drop_table(db, table_name)
        db.close_all()
