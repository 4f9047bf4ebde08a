"""Conflicts between transactions, and session ids compared byte for byte.

A statement or transaction of the store's own that loses a conflict (a deadlock, a serialization
failure, a Galera certification failure, a lock wait timeout) changed nothing and is run again; a
locked() block, which the store can't re-run, raises SessionConflict and changes nothing, and
Session.run_locked() re-runs it. Here the conflicts are made on one server: on PostgreSQL a
REPEATABLE READ transaction that waited for a row another one changed (40001), on MariaDB a lock
wait that times out (1205); tests/test_galera.py makes them across a cluster's nodes.
"""

import contextlib
import logging
import threading
import time

import pytest
import webtest

from conftest import build_app, drop_table, open_database
from peewee_sessions import (
    CONFLICT_ATTEMPTS,
    CONFLICT_PAUSE_S,
    PeeweeSessionStore,
    SessionConflict,
    SessionStoreUnavailable,
)

LIVE = {"cookie": {"expires": "2099-01-01T00:00:00.000Z"}}
# How this connection's wait for a row lock ends in a conflict rather than in the row.
LOSES_CONFLICTS = {
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "mysql": "SET SESSION innodb_lock_wait_timeout = 1",
}
# How long the other transaction holds the row: past MariaDB's one-second lock wait.
HOLD_S = {"postgresql": 0.3, "mysql": 1.5}
conflict_backends = pytest.mark.parametrize("backend", ["postgresql", "mysql"])


@contextlib.contextmanager
def another_transaction_holding(backend, tmp_path, store, sid):
    """Another connection locks the row, writes to it, and commits a moment after the block began."""
    holder_db = open_database(backend, tmp_path)
    holder = PeeweeSessionStore(holder_db, table_name=store.table_name, clear_interval=0)
    locked = threading.Event()

    def hold():
        try:
            with holder.locked(sid):
                holder.patch(sid, {"other": True})
                locked.set()
                time.sleep(HOLD_S[backend])  # the block below waits for the lock meanwhile
        finally:
            holder_db.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(10)
    with store.connection():
        store.db.execute_sql(LOSES_CONFLICTS[backend])
        try:
            yield
        finally:
            store.db.execute_sql("ROLLBACK")  # a failed transaction may still be open on PostgreSQL
            thread.join(10)


@conflict_backends
@pytest.mark.direct_connection
def test_a_merge_that_lost_a_conflict_is_run_again(backend, tmp_path, store):
    store.set("s", dict(LIVE, n=1))
    with another_transaction_holding(backend, tmp_path, store, "s"):
        assert store.patch("s", {"mine": 1})
    assert store.get("s") == dict(LIVE, n=1, other=True, mine=1)


@conflict_backends
@pytest.mark.direct_connection
def test_a_locked_block_that_lost_a_conflict_raises_and_changes_nothing(backend, tmp_path, store):
    store.set("s", dict(LIVE, n=1))
    with pytest.raises(SessionConflict) as raised:
        with another_transaction_holding(backend, tmp_path, store, "s"):
            with store.locked("s"):
                store.patch("s", {"mine": 1})
    assert not isinstance(raised.value, SessionStoreUnavailable)
    assert store.get("s") == dict(LIVE, n=1, other=True)


@conflict_backends
@pytest.mark.direct_connection
def test_run_locked_runs_the_block_again_on_the_stored_session(backend, tmp_path, store):
    app, _ = build_app(store)
    runs = []

    @app.get("/incr")
    def incr(session):
        def add_one(s):
            runs.append(dict(s))
            s["n"] = s.get("n", 0) + 1
        session.run_locked(add_one)
        return str(session["n"])

    @app.get("/locked-incr")
    def locked_incr(session):
        with session.locked():
            session["n"] = session.get("n", 0) + 1

    client = webtest.TestApp(app)
    client.get("/count")  # n = 1
    [sid] = store.all()
    with another_transaction_holding(backend, tmp_path, store, sid):
        assert client.get("/incr").text == "2"
    with another_transaction_holding(backend, tmp_path, store, sid):  # locked() alone can't try again
        assert client.get("/locked-incr", expect_errors=True).status_int == 500  # SessionConflict
    assert store.get(sid)["n"] == 2
    # The first try lost its wait for the lock, before the block ran; the next ran it on the row as stored.
    assert runs == [{"n": 1, "other": True}]
    assert {key: value for key, value in store.get(sid).items() if key != "cookie"} == {"n": 2, "other": True}


@pytest.mark.parametrize("backend", ["mysql"])
def test_new_mysql_tables_compare_ids_byte_for_byte(store):
    store.set("alice-id", dict(LIVE, user="alice"))
    assert store.get("ALICE-ID") is None and store.get("alice-id ") is None
    store.set("ALICE-ID", dict(LIVE, user="mallory"))
    assert store.get("alice-id")["user"] == "alice" and store.get("ALICE-ID")["user"] == "mallory"
    assert store.destroy("ALICE-ID") == 1 and store.get("alice-id")["user"] == "alice"


@pytest.mark.parametrize("backend", ["mysql"])
def test_a_knex_table_with_a_case_insensitive_collation_still_compares_ids_exactly(db, table_name, caplog):
    """connect-session-knex's table takes the server's default collation: case-insensitive, PAD SPACE."""
    with db.connection_context():
        db.execute_sql(f"CREATE TABLE {table_name} (sid varchar(255) NOT NULL PRIMARY KEY, sess json NOT NULL,"
                       f" expired datetime NOT NULL, KEY {table_name}_expired_index (expired))"
                       " DEFAULT CHARSET utf8mb4 COLLATE utf8mb4_general_ci")
    try:
        with caplog.at_level(logging.WARNING, logger="peewee_sessions"):
            store = PeeweeSessionStore(db, table_name=table_name, clear_interval=0)
        [warning] = [record.getMessage() for record in caplog.records if "collation" in record.getMessage()]
        assert "utf8mb4_general_ci" in warning and f"ALTER TABLE {table_name} MODIFY sid" in warning
        store.set("alice-id", dict(LIVE, user="alice"))
        for other in ("ALICE-ID", "alice-id ", "Alice-Id"):
            assert store.get(other) is None
            store.set(other, dict(LIVE, user="mallory"))  # can't be stored beside alice-id: never over it
            assert store.destroy(other) == 0
            assert not store.patch(other, {"user": "mallory"})
        assert store.get("alice-id")["user"] == "alice" and store.length() == 1
        with db.connection_context():  # the ALTER the warning gives makes the column compare bytes
            db.execute_sql(warning[warning.index("ALTER TABLE"):])
        store.set("ALICE-ID", dict(LIVE, user="mallory"))
        assert store.get("alice-id")["user"] == "alice" and store.get("ALICE-ID")["user"] == "mallory"
    finally:
        drop_table(db, table_name)


def test_run_locked_needs_an_attempt(store):
    from peewee_sessions import SessionEngine

    session = SessionEngine(store, secret="s").open("", https=False)
    with pytest.raises(ValueError, match="attempts"):
        session.run_locked(lambda s: None, attempts=0)


def _losing(store, monkeypatch, times):
    """Make the store's next `times` statements lose a conflict (before reaching the database)."""
    calls = []
    run_once = store._execute_once

    def execute_once(sql, params, fetch):
        calls.append(sql)
        if len(calls) <= times:
            raise SessionConflict("lost a conflict (made by the test)")
        return run_once(sql, params, fetch)

    monkeypatch.setattr(store, "_execute_once", execute_once)
    return calls


def test_a_statement_that_lost_a_conflict_is_run_again(store, monkeypatch):
    store.set("s", dict(LIVE, n=1))
    calls = _losing(store, monkeypatch, CONFLICT_ATTEMPTS - 1)
    pauses = []  # the longest each pause may be: it doubles, so that colliding requests spread out
    monkeypatch.setattr("peewee_sessions.random.uniform", lambda low, high: pauses.append(high) or 0.0)
    assert store.destroy("s") == 1  # the last attempt it has won
    assert len(calls) == CONFLICT_ATTEMPTS
    assert pauses == [CONFLICT_PAUSE_S * 2**n for n in range(CONFLICT_ATTEMPTS - 1)]
    monkeypatch.undo()
    assert store.get("s") is None


def test_a_statement_that_loses_every_attempt_raises_after_the_last(store, monkeypatch):
    store.set("s", dict(LIVE, n=1))
    calls = _losing(store, monkeypatch, CONFLICT_ATTEMPTS)
    with pytest.raises(SessionConflict):
        store.destroy("s")
    assert len(calls) == CONFLICT_ATTEMPTS
    monkeypatch.undo()
    assert store.get("s") == dict(LIVE, n=1)


def test_a_statement_in_the_apps_transaction_is_not_run_again(store, monkeypatch):
    store.set("s", dict(LIVE, n=1))
    calls = _losing(store, monkeypatch, 1)
    with pytest.raises(SessionConflict):
        with store.db.atomic():  # a conflict dooms the app's transaction: raised for the app to handle
            store.destroy("s")
    assert len(calls) == 1
    monkeypatch.undo()
    assert store.get("s") == dict(LIVE, n=1)
