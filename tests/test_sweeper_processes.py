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
