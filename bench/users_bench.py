"""A user's sessions (user_key): what the index costs set(), and what sessions_of() costs on a big table.

    python bench/users_bench.py [--db sqlite,postgresql,mysql] [--sets 5000] [--rows 1000000] [--runs 5]

1. set() with user_key="user_id" against set() without it, on two tables of one database: --sets
   set() calls of a small session (cookie, user_id, a name) under new ids, sequentially on one
   connection; the two stores take turns in chunks of 500 so the machine's drift falls on both.
   Repeated --runs times; prints the median time per set() of each and their ratio.
2. PostgreSQL and MySQL/MariaDB only: a table of --rows sessions of --rows/10 users (10 each), filled
   in bulk by one INSERT ... SELECT (generate_series; MariaDB's seq_1_to_N table, else a recursive
   CTE), then the store with user_key adds its index to it (as for an existing table) and ANALYZE.
   Times sessions_of() of 200 random users (median and 90th percentile) --runs times, shows the plan,
   and times destroy_sessions_of() of 50 users. The table is dropped at the end.
Prints Markdown. Not part of the test suite.
"""

import argparse
import datetime
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import peewee  # noqa: E402
from playhouse.db_url import connect  # noqa: E402

from peewee_sessions import PeeweeSessionStore, _iso_z  # noqa: E402

URLS = {
    "postgresql": os.environ.get("PEEWEE_SESSIONS_TEST_POSTGRES",
                                 "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("PEEWEE_SESSIONS_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test"),
}
UTC = datetime.timezone.utc
CHUNK = 500
SESS_JSON = ('{"cookie":{"originalMaxAge":86400000,"expires":"2099-01-01T00:00:00.000Z","httpOnly":true,'
             '"path":"/"},"user_id":%s,"name":"sample name"}')


def open_db(backend, directory):
    if backend == "sqlite":
        return peewee.SqliteDatabase(os.path.join(directory, "users_bench.sqlite"),
                                     pragmas={"journal_mode": "wal", "synchronous": "normal"}, timeout=30)
    return connect(URLS[backend])


def drop(db, table):
    quote = db.quote
    db.execute_sql("DROP TABLE IF EXISTS %s%s%s" % (quote[0], table, quote[1]))


def set_cost(db, sets, runs):
    """Median seconds per set() over the runs: without user_key, with it, and with it for sessions
    that hold no user id (a visitor's, which the partial index leaves out on PostgreSQL and SQLite)."""
    tables = ["b_plain_" + uuid.uuid4().hex[:8], "b_users_" + uuid.uuid4().hex[:8]]
    plain = PeeweeSessionStore(db, table_name=tables[0], clear_interval=0)
    users = PeeweeSessionStore(db, table_name=tables[1], clear_interval=0, user_key="user_id")
    expires = _iso_z(datetime.datetime.now(UTC) + datetime.timedelta(days=1))
    per_op = {plain: [], users: [], "visitors": []}
    key = {plain: "user_id", users: "user_id", "visitors": "visitor"}
    try:
        with db.connection_context():
            for run in range(runs):
                spent = dict.fromkeys(per_op, 0.0)
                for turn, start in enumerate(range(0, sets, CHUNK)):
                    order = [plain, users, "visitors"]
                    for kind in order[turn % 3:] + order[:turn % 3]:  # each goes first in turn
                        store = users if kind == "visitors" else kind
                        started = time.perf_counter()
                        for number in range(start, start + CHUNK):
                            store.set("r%d-%d-%s" % (run, number, key[kind][0]), {
                                "cookie": {"originalMaxAge": 86400000, "expires": expires, "httpOnly": True,
                                           "path": "/"}, key[kind]: number % 1000, "name": "sample name"})
                        spent[kind] += time.perf_counter() - started
                for kind in per_op:
                    per_op[kind].append(spent[kind] / sets)
    finally:
        with db.connection_context():
            for table in tables:
                drop(db, table)
    return [statistics.median(per_op[kind]) for kind in (plain, users, "visitors")]


def fill(db, backend, table, rows):
    """rows sessions of rows // 10 users, in one INSERT ... SELECT."""
    users = max(1, rows // 10)
    if backend == "postgresql":
        db.execute_sql(
            f"INSERT INTO {table} (sid, sess, expired) SELECT 'sid-' || g,"
            f" replace(%s, '%%s', (g %% {users})::text)::json, now() + interval '1 day'"
            f" FROM generate_series(1, {rows}) AS g", (SESS_JSON,))
        return users
    source = f"seq_1_to_{rows}"
    try:
        db.execute_sql(f"SELECT 1 FROM {source} LIMIT 1")  # MariaDB's Sequence engine
        numbers = f"SELECT seq AS g FROM {source}"
    except peewee.DatabaseError:  # MySQL: a recursive CTE
        db.execute_sql(f"SET SESSION cte_max_recursion_depth = {rows + 1}")
        numbers = (f"WITH RECURSIVE n (g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM n WHERE g < {rows})"
                   " SELECT g FROM n")
    db.execute_sql(
        f"INSERT INTO {table} (sid, sess, expired) SELECT CONCAT('sid-', g),"
        f" REPLACE(%s, '%%s', g %% {users}), UTC_TIMESTAMP() + INTERVAL 1 DAY FROM ({numbers}) AS numbers",
        (SESS_JSON,))
    return users


def big_table(db, backend, rows, runs):
    table = "b_million_" + uuid.uuid4().hex[:8]
    result = {}
    try:
        with db.connection_context():
            PeeweeSessionStore(db, table_name=table, clear_interval=0).close()  # knex's table, no user index
            started = time.perf_counter()
            users = fill(db, backend, table, rows)
            result["fill_s"] = time.perf_counter() - started
            started = time.perf_counter()
            store = PeeweeSessionStore(db, table_name=table, clear_interval=0, user_key="user_id")
            result["index_s"] = time.perf_counter() - started
            db.execute_sql(f"ANALYZE {table}" if backend == "postgresql" else f"ANALYZE TABLE {table}")
            dialect = store.dialect
            cursor = db.execute_sql("EXPLAIN " + dialect.sessions_of, ("1234", dialect.now()))
            result["plan"] = "\n".join(" | ".join(str(value) for value in row) for row in cursor.fetchall())
            randomly = random.Random(22)
            medians, p90s = [], []
            for _ in range(runs):
                times = []
                for user in randomly.sample(range(users), 200):
                    started = time.perf_counter()
                    found = store.sessions_of(user)
                    times.append(time.perf_counter() - started)
                    assert len(found) == 10, (user, len(found))
                times.sort()
                medians.append(statistics.median(times))
                p90s.append(times[int(len(times) * 0.9)])
            result["sessions_of_median_ms"] = statistics.median(medians) * 1000
            result["sessions_of_p90_ms"] = statistics.median(p90s) * 1000
            times = []
            for user in randomly.sample(range(users), 50):
                started = time.perf_counter()
                assert store.destroy_sessions_of(user, keep="sid-%d" % user) == 9
                times.append(time.perf_counter() - started)
            result["destroy_median_ms"] = statistics.median(times) * 1000
    finally:
        with db.connection_context():
            drop(db, table)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql,mysql")
    parser.add_argument("--sets", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=1000000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    print("Machine: %s, %d CPUs, Python %s, peewee %s" % (platform.platform(), os.cpu_count(),
                                                         platform.python_version(), peewee.__version__))
    print()
    print("| database | set() without user_key | with user_key | ratio "
          "| with user_key, no user in the session | ratio |")
    print("|---|---|---|---|---|---|")
    directory = tempfile.mkdtemp()  # SQLite's file
    for backend in args.db.split(","):
        db = open_db(backend, directory)
        plain, users, visitors = set_cost(db, args.sets, args.runs)
        print("| %s | %.1f µs | %.1f µs | %.3f× | %.1f µs | %.3f× |" % (
            backend, plain * 1e6, users * 1e6, users / plain, visitors * 1e6, visitors / plain), flush=True)
    print()
    print("| database | rows | fill | add index | sessions_of() median | p90 "
          "| destroy_sessions_of() median |")
    print("|---|---|---|---|---|---|---|")
    plans = []
    for backend in args.db.split(","):
        if backend == "sqlite" or args.rows <= 0:  # --rows 0: the set() part only
            continue
        result = big_table(open_db(backend, directory), backend, args.rows, args.runs)
        print("| %s | %d | %.1f s | %.1f s | %.3f ms | %.3f ms | %.3f ms |" % (
            backend, args.rows, result["fill_s"], result["index_s"], result["sessions_of_median_ms"],
            result["sessions_of_p90_ms"], result["destroy_median_ms"]), flush=True)
        plans.append((backend, result["plan"]))
    for backend, text in plans:
        print("\n%s plan of sessions_of():\n%s" % (backend, text))
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
