"""The Bottle plugin's CPU time per request, in process, for this checkout's module and an earlier one.

    python bench/request_cpu.py --rev 3f7cdf7 [--db URL] [--runs 7]

Each module runs in a child process of its own: a Bottle app with /incr (read a counter from the
session, add one, save) and /hello (no session), called straight through WSGI (no server, no
client) on one kept-open connection, `time.process_time()` per 500 requests, the median of --runs.
The session's cost is /incr minus /hello. CPU time, not wall time, so a busy machine disturbs it
less; it leaves out the database's own work (a server process) but not the driver's.
"""

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = r'''
import io, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import bottle
import peewee_sessions
from playhouse.db_url import connect

db, table, runs = connect(sys.argv[2]), "bench_request_cpu", int(sys.argv[3])
app = bottle.Bottle()
app.install(peewee_sessions.SessionPlugin(db, secret="s", table_name=table, clear_interval=0))

@app.get("/incr")
def incr(session):
    session["n"] = session.get("n", 0) + 1
    return str(session["n"])

@app.get("/hello")
def hello():
    return "hello"

def call(path, cookie):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.url_scheme": "http", "SERVER_NAME": "x",
               "SERVER_PORT": "80", "wsgi.input": io.BytesIO(), "HTTP_COOKIE": cookie}
    headers = []
    b"".join(app(environ, lambda status, h, exc_info=None: headers.extend(h)))
    return headers

cookie = [v for k, v in call("/incr", "") if k == "Set-Cookie"][0].split(";")[0]
db.connect()
try:
    result = {}
    for path in ("/hello", "/incr"):
        samples = []
        for _ in range(runs):
            started = time.process_time()
            for _ in range(500):
                call(path, cookie)
            samples.append((time.process_time() - started) / 500 * 1e6)
        result[path] = statistics.median(samples)
    print("%.0f %.0f" % (result["/hello"], result["/incr"]))
finally:
    db.execute_sql("DROP TABLE " + table)
'''


def measure(module_dir: str, url: str, runs: int) -> tuple:
    out = subprocess.run([sys.executable, "-c", CHILD, module_dir, url, str(runs)], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", required=True, help="the earlier revision to compare with (git)")
    parser.add_argument("--db", action="append", help="database URLs (default: SQLite file and PostgreSQL)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as earlier:
        source = subprocess.run(["git", "-C", here, "show", "%s:peewee_sessions.py" % args.rev], check=True,
                                capture_output=True, text=True).stdout
        with open(os.path.join(earlier, "peewee_sessions.py"), "w") as module:
            module.write(source)
        urls = args.db or ["sqlite:///%s" % os.path.join(earlier, "cpu.sqlite"),
                           "postgresql://postgres@127.0.0.1:5432/test"]
        print("%-12s %-10s %8s %8s %12s" % ("module", "database", "hello", "incr", "session µs"))
        for url in urls:
            for name, directory in ((args.rev, earlier), ("this", here)):
                hello, incr = measure(directory, url, args.runs)
                print("%-12s %-10s %8.0f %8.0f %12.0f" % (name, url.split(":")[0], hello, incr, incr - hello))


if __name__ == "__main__":
    main()
