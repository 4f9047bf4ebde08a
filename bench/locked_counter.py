"""Lost updates on one session, with and without session.locked(): the README's concurrency figures.

A Bottle app with a counter in the session is served by a real gunicorn (gthread workers). One client gets a
cookie, then sends --requests requests with that one cookie from --clients threads at once, first to a route
that counts with a plain read-modify-write, then (on a fresh session) to one that counts inside
`with session.locked():`. It prints how many views each session ended with: every request was answered 200,
so each one that is missing from the count is an increment another request overwrote.

    python bench/locked_counter.py                       # SQLite, a temporary file
    python bench/locked_counter.py --db postgresql://postgres@127.0.0.1:5432/test

Needs gunicorn and requests besides the package's bottle extra. The table is named lc_<random> and dropped.
"""

import argparse
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # this checkout's peewee_sessions, not an installed one


def database(url):
    """A pooled peewee database for a URL (sqlite:///path, postgresql://..., mysql://...)."""
    from playhouse.db_url import connect

    if url.startswith("sqlite:///"):
        from playhouse.pool import PooledSqliteDatabase

        pragmas = {"journal_mode": "wal", "synchronous": "normal"}
        return PooledSqliteDatabase(
            url[len("sqlite:///") :], pragmas=pragmas, timeout=30, check_same_thread=False
        )
    scheme, rest = url.split("://", 1)
    return connect("%s+pool://%s" % (scheme, rest), max_connections=64)


def make_app(db, table):
    import bottle

    from peewee_sessions import SessionPlugin

    app = bottle.Bottle()
    app.install(SessionPlugin(db, secret="locked-counter", table_name=table, clear_interval=0))

    @app.get("/start")
    def start(session):
        session["views"] = 0
        return "0"

    @app.get("/plain")
    def plain(session):
        session["views"] = session.get("views", 0) + 1
        return str(session["views"])

    @app.get("/locked")
    def locked(session):
        with session.locked():
            session["views"] = session.get("views", 0) + 1
        return str(session["views"])

    @app.get("/count")
    def count(session):
        return str(session.get("views"))

    return app


if os.environ.get("LC_DB"):  # imported by gunicorn: build the app in the worker
    app = make_app(database(os.environ["LC_DB"]), os.environ["LC_TABLE"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_round(base, route, requests_, clients):
    """A fresh session, then `requests_` GETs of `route` with its cookie from `clients` threads at once."""
    import requests

    first = requests.get(base + "/start", timeout=30)
    cookie = first.headers["Set-Cookie"].split(";", 1)[0]
    headers = {"Cookie": cookie}
    gate = threading.Barrier(clients)
    local = threading.local()

    def one(i):
        if not hasattr(local, "http"):
            local.http = requests.Session()
            gate.wait()  # every client thread starts sending at the same moment
        return local.http.get(base + route, headers=headers, timeout=120).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(one, range(requests_)))
    elapsed = time.perf_counter() - started
    views = requests.get(base + "/count", headers=headers, timeout=30).text
    ok = sum(status == 200 for status in statuses)
    return views, ok, elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="database URL (default: SQLite in a temporary directory)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=50, help="client threads sending at once")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    args = parser.parse_args(argv)
    args.clients = min(args.clients, args.requests)  # each client thread sends at least once

    tmp = tempfile.mkdtemp(prefix="locked-counter-")
    url = args.db or "sqlite:///" + os.path.join(tmp, "sessions.sqlite")
    table = "lc_" + secrets.token_hex(4)
    from peewee_sessions import PeeweeSessionStore

    with PeeweeSessionStore(database(url), table_name=table, clear_interval=0):
        pass  # the table, made once before the workers race to make it
    port = free_port()
    env = dict(os.environ, LC_DB=url, LC_TABLE=table)
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--chdir",
        BENCH_DIR,
        "-k",
        "gthread",
        "-w",
        str(args.workers),
        "--threads",
        str(args.threads),
        "-b",
        "127.0.0.1:%d" % port,
        "--log-level",
        "warning",
        "locked_counter:app",
    ]
    server = subprocess.Popen(command, env=env)
    base = "http://127.0.0.1:%d" % port
    try:
        import requests

        for _ in range(100):
            try:
                requests.get(base + "/count", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        print(
            "%s, gunicorn -k gthread -w %d --threads %d; %d requests on one cookie from %d client threads"
            % (url.split("://")[0], args.workers, args.threads, args.requests, args.clients)
        )
        for route in ("/plain", "/locked"):
            views, ok, elapsed = run_round(base, route, args.requests, args.clients)
            print(
                "  %-8s %3d answered 200, the session ends at %s views (%.1f s)"
                % (route, ok, views, elapsed)
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
        db = database(url)
        db.execute_sql("DROP TABLE IF EXISTS %s" % table)
        db.close()


if __name__ == "__main__":
    main()
