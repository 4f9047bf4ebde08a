"""Store operations against the raw driver: connect-session-knex's benchmark, and its floor.

    python bench/store_bench.py [--db sqlite,postgresql,mysql] [--ops 10000]

For each database: 10,000 set() calls of {"cookie": {"maxAge": 2000, "expires": <now>}, "name":
"sample name"} under distinct ids, run sequentially and from 8 threads; then 10,000 get() and
10,000 touch(). Beside each, the floor: the store's own SQL statements, with the same JSON
encoding (set) and decoding (get) and the same expiry parsing, run with the raw driver (sqlite3,
psycopg2, pymysql) on one connection, no ORM. Where node is installed, connect-session-knex's
own 10,000 sequential sets run against the same database (tests/node_app's packages).
The store and the raw driver take turns in chunks of --chunk operations (1,000), each on its own
ids, so that the machine's drift during a run falls on both alike.
Prints a Markdown table; run() returns its rows.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import peewee  # noqa: E402
from playhouse.db_url import connect  # noqa: E402

from peewee_sessions import PeeweeSessionStore, _iso_z, _parse_iso  # noqa: E402

URLS = {
    "postgresql": os.environ.get("PEEWEE_SESSIONS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("PEEWEE_SESSIONS_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test"),
}
THREADS = 8
UTC = datetime.timezone.utc


def sample_session():
    return {"cookie": {"maxAge": 2000, "expires": _iso_z(datetime.datetime.now(UTC))}, "name": "sample name"}


def open_peewee(backend, sqlite_path):
    if backend == "sqlite":
        return peewee.SqliteDatabase(sqlite_path, pragmas={"journal_mode": "wal", "synchronous": "normal"},
                                     timeout=30)
    return connect(URLS[backend])


def raw_connection(backend, sqlite_path):
    """The driver's own connection, autocommitting like peewee's."""
    if backend == "sqlite":
        import sqlite3

        conn = sqlite3.connect(sqlite_path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("PRAGMA synchronous=normal")
        return conn
    if backend == "postgresql":
        import psycopg2

        conn = psycopg2.connect(URLS[backend])
        conn.autocommit = True
        return conn
    import pymysql

    db = connect(URLS[backend])
    return pymysql.connect(autocommit=True, database=db.database, **db.connect_params)


def alternating(raw_op, store_op, sids, chunk):
    """(raw ops/s, store ops/s): the two take turns, chunk ids at a time, and each chunk is timed."""
    spent = {raw_op: 0.0, store_op: 0.0}
    for turn, start in enumerate(range(0, len(sids), chunk)):
        pair = (raw_op, store_op) if turn % 2 == 0 else (store_op, raw_op)  # neither always goes first
        for op in pair:
            started = time.perf_counter()
            op(sids[start:start + chunk])
            spent[op] += time.perf_counter() - started
    return len(sids) / spent[raw_op], len(sids) / spent[store_op]


class StoreRunner:
    def __init__(self, store, sess):
        self.store, self.sess = store, sess

    def set(self, sids):
        store, sess = self.store, self.sess
        for sid in sids:
            store.set(sid, sess)

    def set_threaded(self, sids):
        def work(part):
            for sid in part:  # each thread on the store's own connection of the thread, opened once
                self.store.set("t" + sid, self.sess)

        run_threads(work, sids)

    def get(self, sids):
        store = self.store
        for sid in sids:
            store.get(sid)

    def touch(self, sids):
        store, sess = self.store, self.sess
        for sid in sids:
            store.touch(sid, sess)


class RawRunner:
    """The same statements and JSON work on the raw driver: what no ORM could beat."""

    def __init__(self, backend, sqlite_path, statements, sess):
        self.backend, self.sqlite_path, self.sql, self.sess = backend, sqlite_path, statements, sess
        self.conn = raw_connection(backend, sqlite_path)

    def expiry(self, sess):
        return self.sql.db_time(_parse_iso(sess["cookie"]["expires"]))

    def set(self, sids, conn=None, prefix="r"):
        cursor, sql, sess = (conn or self.conn).cursor(), self.sql.set, self.sess
        for sid in sids:
            data, expired = json.dumps(sess, separators=(",", ":")), self.expiry(sess)
            cursor.execute(sql, self.sql.set_params(prefix + sid, data, expired))

    def set_threaded(self, sids):
        def work(part):
            conn = raw_connection(self.backend, self.sqlite_path)  # each thread its own, as the store's threads
            try:
                self.set(part, conn, "rt")
            finally:
                conn.close()

        run_threads(work, sids)

    def get(self, sids):
        cursor, sql = self.conn.cursor(), self.sql.get
        for sid in sids:
            cursor.execute(sql, ("r" + sid, self.sql.now()))
            row = cursor.fetchone()
            json.loads(row[0])

    def touch(self, sids):
        cursor, sql, sess = self.conn.cursor(), self.sql.touch, self.sess
        for sid in sids:
            cursor.execute(sql, (self.expiry(sess), "r" + sid, self.sql.now()))


def run_threads(work, sids):
    """work(part) in THREADS threads, which share sids between them."""
    threads = [threading.Thread(target=work, args=(sids[i::THREADS],)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def knex_sets(backend, table, count, sqlite_path):
    """connect-session-knex's 10,000 sequential sets, in Node; None where node or its packages are missing."""
    node_modules = ROOT / "tests" / "node_app" / "node_modules"
    if not shutil.which("node") or not (node_modules / "connect-session-knex").exists():
        return None
    client = {"sqlite": "sqlite3", "postgresql": "pg", "mysql": "mysql2"}[backend]
    if backend == "sqlite" and not (node_modules / "sqlite3").exists():
        return None
    connection = sqlite_path if backend == "sqlite" else URLS[backend]
    env = dict(os.environ, NODE_PATH=str(node_modules), KNEX_CLIENT=client, KNEX_CONNECTION=connection,
               TABLE_NAME=table, COUNT=str(count))
    result = subprocess.run(["node", str(ROOT / "bench" / "knex_bench.js")], env=env, capture_output=True,
                            text=True, timeout=600)
    if result.returncode:
        raise RuntimeError("knex benchmark failed: " + result.stderr[-2000:])
    return float(result.stdout.strip())


def run(backend, ops=10000, chunk=1000):
    sqlite_path = os.path.join(tempfile.mkdtemp(), "bench.sqlite")
    db = open_peewee(backend, sqlite_path)
    table = "bench_" + uuid.uuid4().hex[:8]
    store = PeeweeSessionStore(db, table_name=table, clear_interval=0)
    sids = [uuid.uuid4().hex for _ in range(ops)]
    sess = sample_session()
    sess["cookie"]["expires"] = _iso_z(datetime.datetime.now(UTC) + datetime.timedelta(hours=1))  # stays live
    rows = []
    try:
        db.connect()
        ours, raw = StoreRunner(store, sess), RawRunner(backend, sqlite_path, store.dialect, sess)
        for op in ("set", "set_threaded", "get", "touch"):
            # The threads open a connection each per turn: two turns each, so that cost stays small.
            turn = len(sids) // 2 if op == "set_threaded" else chunk
            raw_rate, store_rate = alternating(getattr(raw, op), getattr(ours, op), sids, turn)
            rows.append({"database": backend, "operation": op.replace("_threaded", " (8 threads)"),
                         "store ops/s": store_rate, "raw ops/s": raw_rate, "time ratio": raw_rate / store_rate})
        knex_table = table + "_knex"
        knex_rate = knex_sets(backend, knex_table, ops, sqlite_path)
        if knex_rate is not None:
            rows.append({"database": backend, "operation": "set (connect-session-knex, Node)",
                         "store ops/s": knex_rate, "raw ops/s": None, "time ratio": None,
                         "ours / knex": rows[0]["store ops/s"] / knex_rate})
    finally:
        for name in (table, table + "_knex"):
            q = db.quote
            db.execute_sql("DROP TABLE IF EXISTS %s%s%s" % (q[0], name, q[1]))
        store.close()
        db.close()
    return rows


def markdown(rows):
    lines = ["| database | operation | ops/s | raw driver ops/s | time per op vs raw | vs connect-session-knex |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append("| %s | %s | %.0f | %s | %s | %s |" % (
            row["database"], row["operation"], row["store ops/s"],
            "" if row["raw ops/s"] is None else "%.0f" % row["raw ops/s"],
            "" if row["time ratio"] is None else "%.2f×" % row["time ratio"],
            "%.2f× faster" % row["ours / knex"] if "ours / knex" in row else ""))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql,mysql")
    parser.add_argument("--ops", type=int, default=10000)
    parser.add_argument("--chunk", type=int, default=1000, help="operations per turn (default: %(default)s)")
    args = parser.parse_args()
    rows = []
    for backend in args.db.split(","):
        rows += run(backend, args.ops, args.chunk)
    print(markdown(rows))


if __name__ == "__main__":
    main()
