"""Soak: the example site under steady load with the sweeper running; memory, threads and connections stay flat.

    python bench/soak.py --db postgresql://postgres@127.0.0.1:5432/test --minutes 10

The site (example_bottle.make_app) runs in a child process on a threaded WSGI server
(a thread per request, so every request opens and closes its own connection), with
sessions that expire after 20 s and a sweeper every 5 s. Client threads walk through the
site (visit, log in, look, log out) with their own cookies. Every 30 s the child's RSS,
thread count and open file descriptors, and the server's connection count, are sampled.
Prints a Markdown report; exits 1 if a request failed or a resource grew.
"""

import argparse
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVE = """
import sys, socketserver
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from playhouse.db_url import connect
sys.path.insert(0, %r)
import functools
import example_bottle
from example_bottle import make_app
# The site makes its store itself: its table and sweep interval are the soak's.
example_bottle.PeeweeSessionStore = functools.partial(example_bottle.PeeweeSessionStore,
                                                      table_name="soak_sessions", clear_interval=5)

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 64

app = make_app(connect(sys.argv[1], application_name="peewee-sessions-soak") if sys.argv[1].startswith("postgres")
               else connect(sys.argv[1]), secret="soak secret", max_age=20)
make_server("127.0.0.1", int(sys.argv[2]), app, server_class=ThreadingServer, handler_class=Quiet).serve_forever()
""" % str(ROOT)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Visitor:
    """One browser: keeps its cookie, follows the site's flow."""

    def __init__(self, port):
        self.port, self.cookie = port, None

    def request(self, method, path, body=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        set_cookie = response.getheader("Set-Cookie")
        if set_cookie:
            pair = set_cookie.split(";")[0]
            self.cookie = None if pair.endswith("=") else pair
        return response.status

    def walk(self, name):
        return [self.request("GET", "/"), self.request("POST", "/login", urllib.parse.urlencode({"name": name})),
                self.request("GET", "/sessions"), self.request("GET", "/"), self.request("POST", "/logout")]


def process_sample(pid):
    status = Path("/proc/%d/status" % pid).read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir("/proc/%d/fd" % pid)),
    }


def server_connections(url):
    """Connections the site holds on the database server (SQLite: none; its files show as fds)."""
    if url.startswith("postgres"):
        import psycopg2

        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'peewee-sessions-soak'")
            return cur.fetchone()[0]
    if url.startswith("mysql"):
        from playhouse.db_url import connect

        db = connect(url)
        with db.connection_context():
            return db.execute_sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
                                  "AND ID <> CONNECTION_ID()").fetchone()[0]
    return 0


def drop_table(url):
    from playhouse.db_url import connect

    db = connect(url)
    with db.connection_context():
        db.execute_sql("DROP TABLE IF EXISTS soak_sessions")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite:///soak.sqlite")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--sample-every", type=float, default=30)
    args = parser.parse_args()

    port = free_port()
    child = subprocess.Popen([sys.executable, "-c", SERVE, args.db, str(port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    sys.exit("the site did not start")
                time.sleep(0.2)
        stop, counts, failures = threading.Event(), [0] * args.clients, []

        def load(index):
            visitor = Visitor(port)
            while not stop.is_set():
                statuses = visitor.walk("visitor %d" % index)
                counts[index] += len(statuses)
                failures.extend(s for s in statuses if s >= 400)

        threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        samples, started = [], time.monotonic()
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(min(args.sample_every, max(0.0, args.minutes * 60 - (time.monotonic() - started))))
            sample = process_sample(child.pid)
            sample.update(minute=(time.monotonic() - started) / 60, requests=sum(counts),
                          db_connections=server_connections(args.db))
            samples.append(sample)
            print("%(minute)5.1f min  %(requests)7d requests  rss %(rss_mb)6.1f MB  threads %(threads)3d  "
                  "fds %(fds)3d  db connections %(db_connections)d" % sample, file=sys.stderr, flush=True)
        stop.set()
        for thread in threads:
            thread.join(60)
    finally:
        child.terminate()
        child.wait(10)
        drop_table(args.db)

    first, last = samples[min(1, len(samples) - 1)], samples[-1]  # after a warm-up sample
    growth = last["rss_mb"] - first["rss_mb"]
    peak = {key: max(sample[key] for sample in samples) for key in ("threads", "fds", "db_connections")}
    ok = not failures and growth < 10 and peak["db_connections"] <= args.clients + 2 and peak["threads"] <= args.clients + 4
    print("| minute | requests | RSS MB | threads | open fds | db connections |")
    print("|---:|---:|---:|---:|---:|---:|")
    for sample in samples:
        print("| %(minute).1f | %(requests)d | %(rss_mb).1f | %(threads)d | %(fds)d | %(db_connections)d |" % sample)
    print()
    print("%d requests in %.1f minutes on %s, %d failed; RSS %+.1f MB from minute %.1f to the end; "
          "peaks: %d threads, %d fds, %d server connections. %s" % (
              sum(counts), args.minutes, args.db.split(":")[0], len(failures), growth, first["minute"],
              peak["threads"], peak["fds"], peak["db_connections"], "FLAT" if ok else "NOT FLAT"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
