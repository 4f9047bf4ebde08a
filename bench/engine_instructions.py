"""The session engine's own work per /incr request, counted in CPU instructions, against the floor's.

    python bench/engine_instructions.py [--rev 1c54a52] [--requests 1000]

Requests per second on a shared 2-core machine move by tens of percent from one run to the next;
instructions don't. Each variant runs in a child process under valgrind's callgrind (Debian's
`valgrind`), in process, on a SQLite file (WAL, synchronous off, so that no disk wait is counted):

    engine   SessionEngine.open() from a signed Cookie header, session["n"] += 1, finish(), release():
             what every adapter does per request, without the web framework
    floor    the same request by hand: unsign the cookie, the store's SELECT, the JSON, its
             compare-and-set UPDATE, sign the cookie, the Set-Cookie header (bench/http_apps.py's
             floor_incr, which its floor app serves, here without Bottle)

A variant is counted at 200 and at 200 + --requests requests; the difference over --requests is what
one request costs, with the interpreter's start and imports taken out. --rev also counts the engine of
an earlier revision's peewee_sessions.py (git), to see what a change saved.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

CHILD = r'''
import sys, urllib.parse
sys.path[:0] = [sys.argv[1], sys.argv[5]]  # the module to count, then bench/ (http_apps: the floor)
import peewee
import peewee_sessions as ps
from http_apps import floor_incr

variant, count, path = sys.argv[2], int(sys.argv[3]), sys.argv[4]
db = peewee.SqliteDatabase(path, pragmas={"journal_mode": "wal", "synchronous": "off"})
store = ps.PeeweeSessionStore(db, table_name="engine_instructions", sweep_interval=0)
engine = ps.SessionEngine(store, secret="a secret")
sid = "x" * 32
store.set(sid, {"cookie": {"originalMaxAge": 86400000, "expires": "2099-01-01T00:00:00.000Z",
                           "httpOnly": True, "path": "/", "sameSite": "lax"}, "n": 0})
value = urllib.parse.quote(ps.sign_session_id(sid, "a secret"), safe="")
header = "connect.sid=" + value

def engine_request():
    session = engine.open(header, https=False)
    session["n"] = session.get("n", 0) + 1
    engine.finish(session)
    engine.release(session)

def floor_request():
    floor_incr(db, store.dialect, value, "a secret")

request = engine_request if variant == "engine" else floor_request
for _ in range(count):
    request()
'''


def instructions(module_dir, variant, count):
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", CHILD,
             module_dir, variant, str(count), os.path.join(scratch, "sessions.sqlite"), BENCH_DIR],
            capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if not found:
        raise SystemExit("callgrind printed no count:\n" + done.stderr[-2000:])
    return int(found.group(1))


def per_request(module_dir, variant, requests):
    more, base = instructions(module_dir, variant, 200 + requests), instructions(module_dir, variant, 200)
    return (more - base) / requests


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", help="also count the engine of this earlier revision (git)")
    parser.add_argument("--requests", type=int, default=1000, help="requests counted (default 1000)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    here = os.path.dirname(BENCH_DIR)
    rows = [("floor", per_request(here, "floor", args.requests)),
            ("engine", per_request(here, "engine", args.requests))]
    if args.rev:
        with tempfile.TemporaryDirectory() as earlier:
            source = subprocess.run(["git", "-C", here, "show", "%s:peewee_sessions.py" % args.rev],
                                    check=True, capture_output=True, text=True).stdout
            with open(os.path.join(earlier, "peewee_sessions.py"), "w") as module:
                module.write(source)
            rows.append(("engine at %s" % args.rev, per_request(earlier, "engine", args.requests)))
    floor = rows[0][1]
    print("| variant | instructions per /incr | vs the floor's |")
    print("|---|---:|---:|")
    for name, count in rows:
        print("| %s | %.0f | %.2fx |" % (name, count, count / floor))


if __name__ == "__main__":
    main()
