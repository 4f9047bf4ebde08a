"""HTTP benchmark: what a session costs per request, for each session store, on one database.

    python bench/http_bench.py --db postgresql|mysql|sqlite|all [--seconds 6] [--warmup 1]

Each app serves two routes: /incr reads and writes a session counter, /hello doesn't use a session. A
session's cost per request is 1/(requests/s of /incr) - 1/(requests/s of /hello) of the same app, from two
turns taken one after the other: all that a session adds to a request, its round trips included, with the
app's framework taken out. An app's reported cost is the median of those of its rounds (below).
/hello is requested with no cookie (counter.lua's "bare" mode): no app then does any session work for it
(Flask-Session and express-session would otherwise load the session on every request).

The Python apps (bench/http_apps.py) are served by gunicorn (`-k gthread -w 1 --threads 4`), the Express
app (bench/express_app.js) by one Node process, each alone on 127.0.0.1 and driven by wrk (Debian's
`wrk`) with bench/counter.lua: 4 connections, one cookie jar each. counter.lua checks that every /incr
counter is the previous one + 1 on its connection: a lost or doubled write is a wrong counter, and must be
0, however fast.

Each round serves each app from a fresh process, warmed up for --warmup seconds. Then the apps, in a new
random order each round, take turns of --segment seconds in pairs: an app's /hello turn and its /incr turn
back to back (which goes first drawn at random), so that both see the same background load. Rounds go on
until each app has had --seconds per route. Each round gives each app one cost, from its pair, and the app's
session cost is the median of those: a load that drifts during the run shifts both turns of a pair alike,
and one disturbed turn moves one round's cost, not the median. The table shows the range of the rounds'
costs too, and besides requests/s the server's CPU time per request, which other processes disturb less.

    plugin             Bottle + SessionPlugin; the app's database a playhouse.pool pool, as the README
                       recommends (SQLite: the file in WAL mode); the store keeps a connection per thread
    WSGI middleware    a bare WSGI app in SessionMiddleware, on the same kind of database
    Flask interface    Flask with FlaskSessionInterface, on the same kind of database
    floor              Bottle, /incr hand-written: the plugin's own statements on a connection each thread
                       opens once and keeps, and the same signed cookie, nothing else (no lazy load, change
                       detection, reconnection or error handling): the least a session store can cost
    express-session    Express 5 + express-session + connect-session-knex 5 (tests/node_app's packages,
                       installed with `npm ci` on first use, as the tests do)
    Beaker             Bottle in beaker.middleware.SessionMiddleware, session.type = "ext:database"
    Flask-Session      Flask + Flask-Session, SESSION_TYPE = "sqlalchemy"

Every store gets its own freshly named table, dropped at the end. Servers come from the test suite's variables:
PEEWEE_SESSIONS_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test) and
PEEWEE_SESSIONS_TEST_MYSQL (default mysql://root@127.0.0.1:3306/test); SQLite is a temporary file.
Dependencies: bench/requirements.txt, Node 20 with npm. Exit status 1 when a counter was wrong, a request
failed or an app didn't start; the speed targets are reported, not enforced.

From another script: `run(backend, seconds, warmup)` returns the rows as dicts, `costs(rows)` the
session cost of each app (the median of its rounds'), `format_table(rows)` and `target_lines(rows)` print
them.
"""

import argparse
import contextlib
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
NODE_APP_DIR = os.path.join(os.path.dirname(BENCH_DIR), "tests", "node_app")
EXPRESS_APP = os.path.join(BENCH_DIR, "express_app.js")
LUA_SCRIPT = os.path.join(BENCH_DIR, "counter.lua")  # gunicorn imports http_apps from BENCH_DIR

SERVER_URLS = {
    "postgresql": ("PEEWEE_SESSIONS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": ("PEEWEE_SESSIONS_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test"),
}
BACKENDS = ("postgresql", "mysql", "sqlite")
# (name in the table, HB_APP for http_apps or "express", suffix of its table)
APPS = (
    ("plugin", "plugin", "ps"),
    ("WSGI middleware", "middleware", "mw"),
    ("Flask interface", "flaskiface", "fi"),
    ("floor", "floorheld", "fh"),
    ("express-session", "express", "ex"),
    ("Beaker", "beaker", "bk"),
    ("Flask-Session", "flask", "fs"),
)
OURS = ("plugin", "WSGI middleware", "Flask interface")
# The targets: our session cost at most this many times theirs.
TARGETS = (("express-session", 0.8), ("Beaker", 0.5), ("Flask-Session", 0.35), ("floor", 1.1))
ROUTES = ("/incr", "/hello")
WRK_MODE = {"/incr": "incr", "/hello": "bare"}
CONNECTIONS = 4
GUNICORN_THREADS = 4
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SEGMENT_S = 2  # seconds of one wrk run; the apps take turns


class BenchError(Exception):
    pass


def backend_of(db_url):
    return next(backend for backend in BACKENDS if db_url.startswith(backend))


def node_packages():
    """None when tests/node_app's packages are there (installed with `npm ci` when missing), else why not."""
    if not shutil.which("node") or not shutil.which("npm"):
        return "Node.js (node and npm) is not installed"
    if not os.path.isdir(os.path.join(NODE_APP_DIR, "node_modules", "connect-session-knex")):
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_APP_DIR,
                              capture_output=True, text=True, timeout=900)
        if done.returncode:
            return "`npm ci` in %s failed: %s" % (NODE_APP_DIR, (done.stdout + done.stderr)[-500:])
    return None


def node_sqlite3():
    """Whether Node's sqlite3 package (built from source by npm ci) loads."""
    done = subprocess.run(["node", "-e", "require('sqlite3')"], capture_output=True, timeout=60,
                          env=dict(os.environ, NODE_PATH=os.path.join(NODE_APP_DIR, "node_modules")))
    return done.returncode == 0


def database_url(backend, tmpdir):
    if backend == "sqlite":
        return "sqlite:///" + os.path.join(tmpdir, "http_bench.sqlite")
    variable, default = SERVER_URLS[backend]
    return os.environ.get(variable) or default


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is as good as gone
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Gunicorn:
    """One gunicorn (gthread, 1 worker, 4 threads) serving http_apps:app; always stopped by PID."""

    def __init__(self, kind, db_url, table, logdir, threads=GUNICORN_THREADS, pool_size=CONNECTIONS):
        self.port = free_port()
        self.log_path = os.path.join(logdir, "server-%s-%d.log" % (kind, self.port))
        secret = "http bench " + secrets.token_hex(8)
        self.env = dict(os.environ, HB_APP=kind, HB_DB_URL=db_url, HB_TABLE=table or "", HB_POOL=str(pool_size),
                        HB_SECRET=secret, PYTHONUNBUFFERED="1")
        self.command = [
            sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads", str(threads),
            "-b", "127.0.0.1:%d" % self.port, "--chdir", BENCH_DIR, "--graceful-timeout", "5",
            "--timeout", "120", "--log-level", "warning", "http_apps:app",
        ]
        if kind == "express":  # one Node process: it serves the requests itself (no workers)
            client = {"postgresql": "pg", "mysql": "mysql2", "sqlite": "sqlite3"}[backend_of(db_url)]
            connection = db_url[len("sqlite:///"):] if client == "sqlite3" else db_url
            self.env.update(NODE_PATH=os.path.join(NODE_APP_DIR, "node_modules"), KNEX_CLIENT=client,
                            KNEX_CONNECTION=connection, TABLE_NAME=table, SESSION_SECRET=secret,
                            PORT=str(self.port))
            self.command = ["node", EXPRESS_APP]
        self.kind = kind
        self.process = None
        self.worker_pids = []

    def __enter__(self):
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command, cwd=BENCH_DIR, env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.worker_pids = self._workers()
        return self

    def _workers(self):
        return [self.process.pid] if self.kind == "express" else _children(self.process.pid)

    def __exit__(self, *exc_info):
        self.stop()

    def worker_cpu_s(self):
        """CPU seconds (user + system) used so far by the worker processes."""
        total = 0.0
        for pid in self._workers():
            try:
                with open("/proc/%d/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            except (OSError, IndexError, ValueError):
                pass
        return total

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def _wait_ready(self):
        """Until the worker has loaded the app and answers /hello (bounded)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError("gunicorn exited with %s:\n%s" % (self.process.returncode, self.log_tail()))
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/hello")
                response = conn.getresponse()
                body = response.read()
                conn.close()
                if response.status == 200 and body == b"hello":
                    return
                last_error = "GET /hello answered %d %r" % (response.status, body[:200])
            except OSError as exc:
                last_error = exc
            time.sleep(0.1)
        raise BenchError("gunicorn did not answer within %d s (%s):\n%s" % (START_TIMEOUT_S, last_error,
                                                                            self.log_tail()))

    def stop(self):
        if self.process is None:
            return
        pids = (set(self.worker_pids) | set(_children(self.process.pid))) - {self.process.pid}
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # gunicorn: graceful stop of its workers
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for pid in pids:  # workers the master didn't take down (it was killed, say)
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process = None
        self.log.close()


def run_wrk(port, mode, seconds, connections=CONNECTIONS):
    """One wrk run with counter.lua; its result line as a dict."""
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: apt-get update && apt-get install wrk")
    seconds = max(1, int(round(seconds)))
    command = ["wrk", "-t", str(connections), "-c", str(connections), "-d", "%ds" % seconds, "--timeout", "10s",
               "-s", LUA_SCRIPT, "http://127.0.0.1:%d" % port, "--", mode]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("HTTP_BENCH_RESULT "):
            return json.loads(line.split(" ", 1)[1])
    raise BenchError("wrk printed no result (exit %d):\n%s\n%s" % (done.returncode, done.stdout, done.stderr))


def _count(result, route):
    """Requests of the route in one wrk run: in hello mode each connection's first request is the /incr
    that gets its cookie, so only /hello counts."""
    return result["incr_n"] if route == "/incr" else result["hello_n"]


def _turn_rps(result, route):
    """Requests/s of one wrk run of the route; 0 when it served none."""
    return _count(result, route) / result["duration_us"] * 1e6 if result["duration_us"] else 0.0


def _merge(results, route):
    """Several wrk runs of one app and route, added up (with each run's requests/s in "segments")."""
    total = dict(results[0], segments=[_turn_rps(r, route) for r in results if r["duration_us"]])
    for result in results[1:]:
        for key, value in result.items():
            if key == "first_wrong":
                total[key] = total[key] or value
            elif key == "p99_us":
                total[key] = max(total[key], value)
            elif key != "p50_us":
                total[key] += value
    total["p50_us"] = sorted(result["p50_us"] for result in results)[len(results) // 2]
    return total


def _errors(result):
    """(responses other than 2xx, socket errors) of a wrk result."""
    non_2xx = max(result["bad_status"], result["non_2xx_3xx"])
    return non_2xx, result["connect_errors"] + result["read_errors"] + result["write_errors"] + result["timeouts"]


def _row(backend, app, route, result):
    seconds = result["duration_us"] / 1e6
    count = _count(result, route)
    non_2xx, socket_errors = _errors(result)
    return {
        "database": backend,
        "app": app,
        "route": route,
        "requests_per_s": count / seconds if seconds else 0.0,
        "segment_requests_per_s": result.get("segments", []),  # each wrk run's: the run-to-run noise
        "wrong_counters": result["wrong"],
        "errors": non_2xx + socket_errors,
        "non_2xx": non_2xx,
        "socket_errors": socket_errors,
        "requests": count,
        "seconds": seconds,
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "first_wrong": result["first_wrong"] or None,
        # The app's own CPU (the gunicorn worker's user + system time) per request: steadier than
        # requests/s when other processes share the machine.
        "worker_cpu_ms_per_request": result["worker_cpu_us"] / 1000 / count if count else None,
    }


def _drop_tables(db_url, tables, attempts=5):
    """Drop the tables the apps made; retried a few times (the server may be restarting)."""
    for attempt in range(attempts):
        db = None
        try:
            db = _plain_database(db_url)
            db.connect()
            for table in tables:
                db.execute_sql("DROP TABLE IF EXISTS %s" % table)  # names we made: hb_<hex>_<suffix>
            return
        except Exception as exc:  # report, don't hide the run's own outcome
            if attempt == attempts - 1:
                print("warning: could not drop the bench tables %s: %s" % (", ".join(tables), exc), file=sys.stderr)
            else:
                time.sleep(2)
        finally:
            if db is not None and not db.is_closed():
                db.close()


def _plain_database(db_url):
    from playhouse.db_url import connect

    return connect(db_url)


def _check_reachable(backend, db_url):
    if backend == "sqlite":
        return
    try:
        db = _plain_database(db_url)
        db.connect()
        db.close()
    except Exception as exc:
        variable = SERVER_URLS[backend][0]
        raise BenchError("%s at %s is unreachable (%s); set %s to its URL" % (backend, db_url, exc, variable))


def run(backend, seconds=6, warmup=1, connections=CONNECTIONS, threads=GUNICORN_THREADS, apps=None,
        segment=SEGMENT_S, progress=None):
    """Benchmark the apps on one database; one dict per (app, route).

    The run is made of rounds. Each round starts every app in a process of its own, warms each up for
    `warmup` s of /incr, then gives each app, in a new random order, two `segment`-second wrk runs back to
    back, /hello and /incr (which first drawn at random), and stops them; rounds go on until each app has had
    `seconds` per route. A fresh process a round: one process may run the very same code some percent slower
    than another for its whole life (how its memory happened to be laid out), so each app's numbers average
    over as many processes as rounds. Each wrk run opens fresh connections, so each starts fresh sessions
    (one INSERT per connection, then UPDATEs).

    The two turns of a pair are seconds apart, so they see the same background load: each round gives an
    app one session cost (its /incr row's "round_costs_ms", in round order), and costs() takes their
    median, which one disturbed turn doesn't move much. The rows' requests/s are over all turns.

    `apps` limits the run to some of the APPS' names. `progress` (a callable taking a string) hears what
    is running.
    """
    if backend not in BACKENDS:
        raise ValueError("backend must be one of %s, not %r" % (", ".join(BACKENDS), backend))
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: apt-get update && apt-get install wrk")
    say = progress or (lambda message: None)
    segment = max(1, round(min(segment, seconds)))
    rounds = max(1, round(seconds / segment))
    tmpdir = tempfile.mkdtemp(prefix="http_bench_")
    db_url = database_url(backend, tmpdir)
    prefix = "hb_%s" % secrets.token_hex(4)
    chosen = [(name, kind, suffix) for name, kind, suffix in APPS if not apps or name in apps]
    if any(kind == "express" for _, kind, _ in chosen):
        why_not = node_packages() or (None if backend != "sqlite" or node_sqlite3()
                                      else "Node's sqlite3 package did not build")
        if why_not:
            say("%s: no express-session row: %s" % (backend, why_not))
            chosen = [(name, kind, suffix) for name, kind, suffix in chosen if kind != "express"]
    names = [name for name, _, _ in chosen]
    # Each store's table, made by its app and dropped at the end.
    table_of = {name: "%s_%s" % (prefix, suffix) for name, _, suffix in chosen}
    results = {}
    round_costs = {name: [] for name in names}  # ms, one per round: 1000/incr_rps - 1000/hello_rps
    log_tails = {}  # the server log of an app's run that went wrong
    try:
        _check_reachable(backend, db_url)
        for index in range(rounds):
            say("%s: round %d/%d: starting %s, %g s of warm-up each" % (
                backend, index + 1, rounds, "; ".join(names), warmup))
            with contextlib.ExitStack() as stack:
                servers = {}
                for name, kind, _ in chosen:
                    server = Gunicorn(kind, db_url, table_of[name], tmpdir, threads=threads,
                                      pool_size=max(connections, threads))
                    servers[name] = stack.enter_context(server)
                    if warmup > 0:
                        run_wrk(servers[name].port, "incr", warmup, connections)
                # A random order, not a rotation: a turn's speed depends on which turn came before it (by
                # 5% for the very same code, here), and a rotation keeps each app after the same one. Which
                # of an app's two turns goes first is drawn too: neither route always follows another app.
                order = random.sample(names, len(names))
                pairs = [(name, random.sample(ROUTES, len(ROUTES))) for name in order]
                say("%s: round %d/%d: %d s a turn, each app's two back to back: %s" % (
                    backend, index + 1, rounds, segment,
                    "; ".join("%s %s" % (name, " then ".join(routes)) for name, routes in pairs)))
                for name, routes in pairs:
                    rps = {}
                    for route in routes:
                        cpu_before = servers[name].worker_cpu_s()
                        result = run_wrk(servers[name].port, WRK_MODE[route], segment, connections)
                        result["worker_cpu_us"] = int((servers[name].worker_cpu_s() - cpu_before) * 1e6)
                        results.setdefault((name, route), []).append(result)
                        rps[route] = _turn_rps(result, route)
                        if result["wrong"] or any(_errors(result)):
                            log_tails.setdefault(name, servers[name].log_tail(15))
                    if rps["/incr"] and rps["/hello"]:  # a turn that served nothing gives no cost
                        round_costs[name].append(1000 / rps["/incr"] - 1000 / rps["/hello"])
        rows = []
        for name in names:
            for route in ROUTES:
                row = _row(backend, name, route, _merge(results[(name, route)], route))
                if route == "/incr":
                    row["round_costs_ms"] = round_costs[name]
                if row["errors"] or row["wrong_counters"]:
                    row["log_tail"] = log_tails.get(name, "")
                rows.append(row)
    finally:
        if backend != "sqlite":  # SQLite's tables go with its temporary file
            _drop_tables(db_url, list(table_of.values()))
        shutil.rmtree(tmpdir, ignore_errors=True)
    return rows


def _rps(rows, database, app, route):
    for row in rows:
        if row["database"] == database and row["app"] == app and row["route"] == route:
            return row
    return None


def costs(rows):
    """{(database, app): the session cost per request in ms, and in the server's CPU ms}.

    "ms" is the median of the app's per-round costs (each from a pair of turns taken back to back);
    "cpu_ms" comes from the server's CPU time over all the turns of each route.
    """
    out = {}
    for row in rows:
        if row["route"] != "/incr" or not row.get("round_costs_ms"):
            continue
        hello = _rps(rows, row["database"], row["app"], "/hello") or {}
        ours, bare = row["worker_cpu_ms_per_request"], hello.get("worker_cpu_ms_per_request")
        cpu = ours - bare if ours is not None and bare is not None else None
        out[(row["database"], row["app"])] = {"ms": statistics.median(row["round_costs_ms"]), "cpu_ms": cpu}
    return out


def format_table(rows):
    lines = ["| database | app | /incr req/s | /hello req/s | session cost ms/request (median of rounds) "
             "| session cost per round, min-max ms | server CPU ms/request: /incr, /hello "
             "| /incr turns min-max req/s | wrong counters | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    cost = costs(rows)
    for row in rows:
        if row["route"] != "/incr":
            continue
        hello = _rps(rows, row["database"], row["app"], "/hello") or {}
        turns = row.get("segment_requests_per_s") or []
        cpu = "%.3f, %.3f" % (row["worker_cpu_ms_per_request"] or 0,
                              hello.get("worker_cpu_ms_per_request") or 0)
        c = cost.get((row["database"], row["app"]))
        per_round = row.get("round_costs_ms") or []
        lines.append("| %s | %s | %.0f | %.0f | %s | %s | %s | %s | %d | %d |" % (
            row["database"], row["app"], row["requests_per_s"], hello.get("requests_per_s", 0),
            "-" if c is None else "%.3f" % c["ms"],
            "%.3f-%.3f" % (min(per_round), max(per_round)) if per_round else "-", cpu,
            "%.0f-%.0f" % (min(turns), max(turns)) if turns else "-",
            row["wrong_counters"] + hello.get("wrong_counters", 0), row["errors"] + hello.get("errors", 0)))
    return "\n".join(lines)


def targets(rows):
    """The issue's targets: (database, ours, theirs, our cost / their cost, limit, met) for each pair."""
    cost, out = costs(rows), []
    for database in dict.fromkeys(row["database"] for row in rows):
        for ours in OURS:
            for theirs, limit in TARGETS:
                a, b = cost.get((database, ours)), cost.get((database, theirs))
                if a and b and b["ms"] > 0:
                    ratio = a["ms"] / b["ms"]
                    out.append((database, ours, theirs, ratio, limit, ratio <= limit))
    return out


def target_lines(rows):
    lines = ["- %s: %s's session cost / %s's = %.2f (target <= %.2f): %s" % (
        database, ours, theirs, ratio, limit, "met" if met else "MISSED")
        for database, ours, theirs, ratio, limit, met in targets(rows)]
    wrong = sum(row["wrong_counters"] for row in rows)
    errors = sum(row["errors"] for row in rows)
    lines.append("- wrong counters: %d, errors (non-2xx + socket errors): %d (both must be 0): %s" % (
        wrong, errors, "ok" if not wrong and not errors else "FAILED"))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, choices=BACKENDS + ("all",), help="the database to run on")
    parser.add_argument("--seconds", type=float, default=6,
                        help="measured seconds per app and route (default 6)")
    parser.add_argument("--warmup", type=float, default=1,
                        help="warm-up seconds of each app's process (default 1)")
    parser.add_argument("--segment", type=float, default=SEGMENT_S,
                        help="seconds of each wrk run; the apps take turns (default %(default)s)")
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="wrk connections (default 4)")
    parser.add_argument("--apps", nargs="+", choices=[name for name, _, _ in APPS], help="only these apps")
    args = parser.parse_args(argv)
    backends = BACKENDS if args.db == "all" else (args.db,)
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    rows = []
    try:
        for backend in backends:
            rows += run(backend, args.seconds, args.warmup, connections=args.connections, apps=args.apps,
                        segment=args.segment,
                        progress=lambda message: print(message, file=sys.stderr, flush=True))
    except BenchError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    print("HTTP benchmark: gunicorn -k gthread -w 1 --threads %d (Node: one process), wrk %d connections "
          "(one cookie each), %g s per app and route in %g-s turns (each app's /hello and /incr back to "
          "back; its session cost the median of the rounds'), after %g s warm-up; load average "
          "before: %s" % (
              GUNICORN_THREADS, args.connections, args.seconds, args.segment, args.warmup, load_before))
    print()
    print(format_table(rows))
    print()
    print("Targets (ratios within the same run):")
    print("\n".join(target_lines(rows)))
    for row in rows:
        if row.get("first_wrong") or row.get("log_tail"):
            print("\n%s %s %s: first wrong answer: %s\n%s" % (row["database"], row["app"], row["route"],
                                                             row.get("first_wrong"), row.get("log_tail", "")),
                  file=sys.stderr)
    return 1 if any(row["wrong_counters"] or row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
