"""Several app processes on one table, each with its own sweeper: no error, no deadlock, no live row lost."""

import datetime
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import database_url, drop_table
from peewee_sessions import PeeweeSessionStore

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 3
SECONDS = 4

CHILD = textwrap.dedent("""
    import sys, time
    from playhouse.db_url import connect
    from peewee_sessions import PeeweeSessionStore
    errors = []
    store = PeeweeSessionStore(connect(sys.argv[1]), table_name=sys.argv[2], clear_interval=0.1,
                               sweep_batch_size=50, on_cleanup_error=errors.append)
    swept, sweep_batches = [], store.sweep_batches
    def counting():  # count what this process's sweeper deleted
        for count in sweep_batches():
            swept.append(count)
            yield count
    store.sweep_batches = counting
    store.get("start-the-sweeper")
    time.sleep(float(sys.argv[3]))
    store.close()
    print(len(errors), sum(swept), *errors, sep="\\n")
""")


def expiring(seconds):
    return {"cookie": {"expires": datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)}}


def test_concurrent_sweepers_delete_only_expired_rows(backend, db, tmp_path, table_name):
    store = PeeweeSessionStore(db, table_name=table_name, clear_interval=0)
    try:
        with store.connection(), db.atomic():  # one commit: MariaDB syncs its log on each
            for i in range(1500):
                store.set("dead-%d" % i, expiring(-60))
        children = [subprocess.Popen([sys.executable, "-c", CHILD, database_url(backend, tmp_path), table_name,
                                      str(SECONDS)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for _ in range(PROCESSES)]
        live, deadline, i = [], time.monotonic() + SECONDS, 0
        while time.monotonic() < deadline:  # writes go on while the sweepers run
            store.set("live-%d" % i, expiring(3600))
            store.set("dying-%d" % i, expiring(-1))
            live.append("live-%d" % i)
            i += 1
            # As requests do, not in a tight loop: SQLite's busy handler isn't fair, and a writer that never
            # pauses (on the store's own connection, kept open) starves the other processes' sweeps.
            time.sleep(0.001)
        reports = [child.communicate(timeout=60) for child in children]
        swept_by_children = 0
        for child, (out, err) in zip(children, reports):
            assert child.returncode == 0, err
            errors, swept = out.splitlines()[:2]
            assert errors == "0", out  # no sweep failed: no deadlock, no error
            swept_by_children += int(swept)
        assert swept_by_children > 0
        # Every expired row was deleted by exactly one sweeper (or by this last sweep), and no live one.
        assert swept_by_children + store.sweep() == 1500 + len(live)
        assert sorted(store.all()) == sorted(live)
    finally:
        store.close()
        drop_table(db, table_name)


def test_workers_forked_after_the_store_was_made_share_no_connection(backend, tmp_path, table_name):
    """gunicorn --preload: the store is made (and its table checked) in the parent, then workers fork."""
    from conftest import open_pooled_database

    db = open_pooled_database(backend, tmp_path)
    store = PeeweeSessionStore(db, table_name=table_name, clear_interval=0)
    children = []
    try:
        for worker in range(2):
            pid = os.fork()
            if pid == 0:  # the worker: its own sessions, read back at once
                status = 1
                try:
                    for i in range(300):
                        store.set("w%d" % worker, {"cookie": {}, "i": i})
                        assert store.get("w%d" % worker) == {"cookie": {}, "i": i}
                    status = 0
                finally:
                    os._exit(status)
            children.append(pid)
        statuses, deadline = {}, time.monotonic() + 30
        while len(statuses) < len(children) and time.monotonic() < deadline:
            for pid in set(children) - set(statuses):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = status
            time.sleep(0.05)
        for pid in set(children) - set(statuses):  # stuck on a socket another worker reads from
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        assert sorted(statuses.values()) == [0, 0], "a worker hung, failed, or read another's results"
    finally:
        store.close()
        db.close_all()
        drop_table(db, table_name)
