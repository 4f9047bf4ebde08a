"""Queries per request, counted: a route that doesn't use its session, one that reads it, one that changes it.

    python bench/queries.py [--db sqlite,postgresql,mysql]

Every statement peewee sends goes through Database.execute_sql; this wraps it (on the app's database
and on the store's own per-thread one) and counts, per request, through a real WSGI stack (WebTest),
on an existing session; and the connections opened (0 once the thread's own connection is open).
"""

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bottle  # noqa: E402
import webtest  # noqa: E402

from peewee_sessions import PeeweeSessionStore, SessionPlugin  # noqa: E402
from store_bench import open_peewee  # noqa: E402

ROUTES = [
    ("doesn't use its session", "/hello"),
    ("reads it (touch not due)", "/read"),
    ("reads it (touch due)", "/read?due"),
    ("changes it", "/incr"),
    ("new session, first write", "/incr?fresh"),
]


def make_app(store, touch_after):
    app = bottle.Bottle()
    app.install(SessionPlugin(store, secret="bench", touch_after=touch_after))

    @app.get("/hello")
    def hello():
        return "hello"

    @app.get("/read")
    def read(session):
        return str(session.get("n"))

    @app.get("/incr")
    def incr(session):
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    return app


def run(backend):
    db = open_peewee(backend, os.path.join(tempfile.mkdtemp(), "queries.sqlite"))
    table = "queries_" + uuid.uuid4().hex[:8]
    store = PeeweeSessionStore(db, table_name=table, clear_interval=0)
    statements, connects = [], []
    # The store's statements go on the app's database in a transaction, on its own connection otherwise.
    databases = [d for d in (db, store._own_db) if d is not None]
    for database in databases:
        database.execute_sql = _counting(database.execute_sql, lambda sql: statements.append(sql.split()[0]))
        database._connect = _counting(database._connect, lambda: connects.append(1))
    rows = []
    try:
        clients = {due: webtest.TestApp(make_app(store, 0 if due else 3600)) for due in (False, True)}
        for client in clients.values():
            client.get("/incr")  # an existing session
        for label, path in ROUTES:
            client = clients["due" in path]
            if "fresh" in path:
                client = webtest.TestApp(client.app)
            statements.clear()
            connects.clear()
            client.get(path.split("?")[0])
            rows.append({"database": backend, "request": label, "statements": list(statements),
                         "connects": len(connects)})
    finally:
        for database in databases:
            del database.execute_sql, database._connect
        store.close()
        quote = db.quote
        db.execute_sql("DROP TABLE IF EXISTS %s%s%s" % (quote[0], table, quote[1]))
        db.close()
    return rows


def _counting(function, note):
    def counting(*args, **kwargs):
        note(*args[:1])
        return function(*args, **kwargs)

    return counting


def markdown(rows):
    lines = ["| database | a request that | queries | statements | connections opened |",
             "|---|---|---:|---|---:|"]
    for row in rows:
        lines.append("| %s | %s | %d | %s | %d |" % (
            row["database"], row["request"], len(row["statements"]), ", ".join(row["statements"]) or "none",
            row["connects"]))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql,mysql")
    args = parser.parse_args()
    rows = []
    for backend in args.db.split(","):
        rows += run(backend)
    print(markdown(rows))


if __name__ == "__main__":
    main()
