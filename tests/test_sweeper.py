"""The sweeper: a daemon threading.Timer that deletes expired rows, survives failures and stops on close()."""

import datetime
import logging
import threading
import time

import pytest

from conftest import drop_table, open_pooled_database
from peewee_sessions import PeeweeSessionStore

UTC = datetime.timezone.utc
EXPIRED = {"cookie": {"expires": "2001-01-01T00:00:00.000Z"}}
LIVE = {"cookie": {"expires": "2099-01-01T00:00:00.000Z"}}


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def raw_count(store):
    with store.connection():
        return store.db.execute_sql("SELECT COUNT(*) FROM %s" % store.table_name).fetchone()[0]


def count_sweeps(store):
    """A list that gets each sweep's total, in rows deleted, as the sweeper finishes it."""
    swept, sweep_batches = [], store.sweep_batches

    def counting():
        total = 0
        try:
            for count in sweep_batches():
                total += count
                yield count
        finally:
            swept.append(total)

    store.sweep_batches = counting
    return swept


def test_sweeps_expired_rows_on_its_own(make_store):
    store = make_store(clear_interval=0.2)
    store.set("old", EXPIRED)
    store.set("new", LIVE)
    assert wait_for(lambda: raw_count(store) == 1)
    assert store.get("new") == LIVE


def test_starts_lazily_on_first_use(make_store):
    store = make_store(clear_interval=30)
    assert store._sweeper.timer is None
    store.get("anything")
    assert store._sweeper.timer.daemon and store._sweeper.timer.is_alive()


def test_survives_a_failing_sweep_and_reports_it(db, make_store):
    errors = []
    store = make_store(clear_interval=0.2, on_cleanup_error=errors.append)
    store.set("old", EXPIRED)
    drop_table(db, store.table_name)  # every sweep fails while the table is gone
    assert wait_for(lambda: len(errors) >= 2)
    with store.connection():
        store.model.create_table()
    store.set("old", EXPIRED)
    assert wait_for(lambda: raw_count(store) == 0)  # it kept going


def test_failures_are_logged_by_default(db, make_store, caplog):
    store = make_store(clear_interval=0.2)
    store.get("x")
    drop_table(db, store.table_name)
    with caplog.at_level(logging.ERROR, logger="peewee_sessions"):
        assert wait_for(lambda: any("sweeping expired sessions failed" in r.message for r in caplog.records))


def test_a_raising_error_handler_does_not_stop_it(db, make_store):
    calls = []

    def handler(exc):
        calls.append(exc)
        raise RuntimeError("handler bug")

    store = make_store(clear_interval=0.1, on_cleanup_error=handler)
    store.get("x")
    drop_table(db, store.table_name)
    assert wait_for(lambda: len(calls) >= 2)


def test_close_stops_it(make_store):
    store = make_store(clear_interval=0.1)
    store.get("x")
    store.close()
    time.sleep(0.3)
    assert not any(t.name.startswith("peewee-sessions sweeper (%s)" % store.table_name) and t.is_alive()
                   for t in threading.enumerate())
    store.set("old", EXPIRED)  # still usable, but nothing sweeps any more
    time.sleep(0.3)
    assert raw_count(store) == 1


def test_close_waits_for_a_sweep_under_way_and_stops_it_between_batches(make_store):
    filler = make_store()
    for i in range(40):
        filler.set("old-%d" % i, EXPIRED)
    store = make_store(clear_interval=0.05, sweep_batch_size=5)
    batches, sweep_batches = [], store.sweep_batches
    started, closing = threading.Event(), threading.Event()

    def slow_batches():
        for count in sweep_batches():
            batches.append(count)
            started.set()
            closing.wait(5)  # the sweep is under way when close() is called
            assert wait_for(lambda: store._sweeper._stopped)
            yield count

    store.sweep_batches = slow_batches
    store.get("first use starts the sweeper")
    assert started.wait(10)
    timer = store._sweeper.timer
    closing.set()
    store.close()
    assert not timer.is_alive()  # close() returned after the sweep did: its connection is back
    assert len(batches) == 1 and raw_count(store) == 35  # it stopped after the batch it was in


def test_negative_interval_is_refused(db):
    with pytest.raises(ValueError):
        PeeweeSessionStore(db, clear_interval=-1)


def test_leaves_no_pooled_connection_in_use(backend, tmp_path, table_name):
    sqlite_across_threads = {"check_same_thread": False} if backend == "sqlite" else {}  # the pool's threads
    pooled = open_pooled_database(backend, tmp_path, max_connections=3, timeout=5, **sqlite_across_threads)
    store = PeeweeSessionStore(pooled, table_name=table_name, clear_interval=0.05)
    swept = count_sweeps(store)
    try:
        store.set("old", EXPIRED)
        assert wait_for(lambda: len(swept) >= 10)  # more sweeps than the pool has connections
        assert swept[0] == 1
        store.close()
        time.sleep(0.2)
        assert not pooled._in_use
    finally:
        store.close()
        drop_table(pooled, table_name)
        pooled.close_all()


def test_a_forked_child_starts_its_own_sweeper(make_store):
    import os

    store = make_store(clear_interval=30)
    store.get("warm")
    parent_timer = store._sweeper.timer
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's timer thread did not come along
        try:
            before = store._sweeper.timer
            store._sweeper.start_if_needed()
            ok = before is None and store._sweeper.timer is not None and store._sweeper.timer.is_alive()
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert store._sweeper.timer is parent_timer and parent_timer.is_alive()
