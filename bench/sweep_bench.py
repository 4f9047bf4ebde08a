"""Sweep benchmark: the store's batched sweep of many expired rows, with a reader running alongside.

    python bench/sweep_bench.py --db postgresql [--expired 1000000] [--live 100000]
    python bench/sweep_bench.py --db mysql --expired 50000 --live 5000     # a quick run

For each database it makes a table with a unique name (the store's own DDL), bulk-loads
`expired` rows whose expiry has passed and `live` rows that expire in 1 h to 1 day, in the exact
formats the store writes (checked against one row of each kind written by `store.set()`), and
runs ANALYZE (VACUUM ANALYZE on PostgreSQL, the state autovacuum would leave a loaded table in).
A reader thread then calls `store.get(live_sid)` in a loop on its own connection (held open, as
a pool would; 1 ms between reads, --reader-pause): first for 30 s while nothing else runs
(idle, --idle-seconds: long enough that the server's own work after the bulk load, such as
flushing the loaded pages, does not decide the idle p99), then while the main thread sweeps with the store's batched sweep at its
default batch size, timing every DELETE statement as it runs (`store.sweep_batches()`, which
`store.sweep()` sums; the rests between batches are not part of a batch's time). On MySQL/MariaDB
a backlog is walked in key order, and each lock-free read of a window of keys is timed apart; on
PostgreSQL in page order, and each lock-free read of a slice of the expired index after the walk
is timed apart. Then the next sweep runs straight away (before any vacuum), and its DELETEs count
towards the longest too.
Afterwards it checks that exactly `expired` rows went and that every live row is still there, and
drops the table (also on failure or Ctrl-C).

Prints a Markdown table, then the EXPLAIN of one sweep batch statement per database (before
the sweep, and EXPLAIN ANALYZE of a batch before and after the sweep, each rolled back).
Exits 1 when a check fails or a target is missed: reader p99 during the sweep at most 3x its
idle p99, no single batch over 100 ms.

To try a change to the sweep without editing the library: --batch N (repeatable; each on a
freshly loaded table), --pause SECONDS between batches. --json FILE also writes every result,
with each batch's time.

The servers: PEEWEE_SESSIONS_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test) and
PEEWEE_SESSIONS_TEST_MYSQL (default mysql://root@127.0.0.1:3306/test), as the test suite uses.

Another script can call `run(backend, expired, live)`, which returns a list of result dicts
(one per batch size measured; by default just the store's default).
"""

import argparse
import base64
import datetime
import io
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playhouse.db_url import connect  # noqa: E402

from peewee_sessions import PeeweeSessionStore  # noqa: E402

UTC = datetime.timezone.utc
URLS = {
    "postgresql": ("PEEWEE_SESSIONS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": ("PEEWEE_SESSIONS_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test"),
}
P99_RATIO_TARGET = 3.0
BATCH_MS_TARGET = 100.0
DEFAULT_BATCH_SIZE = PeeweeSessionStore.__init__.__kwdefaults__["sweep_batch_size"]
SESS_TEMPLATE = '{"cookie":{"originalMaxAge":86400000,"expires":"%s","httpOnly":true,"path":"/"},"n":1}'
LOAD_CHUNK = 5000  # rows per multi-row INSERT (MySQL)
LOAD_TXN_ROWS = 50000  # rows per transaction while loading MySQL
COPY_ROWS = 100000  # rows per COPY (PostgreSQL)

def log(message):
    print(message, file=sys.stderr, flush=True)


def database_url(backend):
    variable, default = URLS[backend]
    return os.environ.get(variable, default)


def quoted(backend, name):
    return ('"%s"' if backend == "postgresql" else "`%s`") % name


def open_database(backend):
    url = database_url(backend)
    if backend == "postgresql":
        return connect(url, application_name="peewee-sessions-sweep-bench")
    return connect(url)


# -- The rows, as the store writes them ------------------------------------------------------


def iso_z(instant):
    """JavaScript's Date#toISOString, as express-session writes cookie.expires."""
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (instant.microsecond // 1000)


def session_dict(instant):
    return json.loads(SESS_TEMPLATE % iso_z(instant))


def column_values(backend, instant):
    """(sess text, expired value) exactly as store.set() writes them for a session expiring then."""
    sess = SESS_TEMPLATE % iso_z(instant)
    if backend == "postgresql":
        return sess, instant  # timestamptz, millisecond precision (from the cookie's ISO text)
    return sess, instant.replace(tzinfo=None, microsecond=0)  # a UTC DATETIME in whole seconds


def make_rows(expired, live, seed):
    """[(sid, expiry_ms, is_live)] sorted by sid: expired and live rows interleaved at random.

    Expired rows expired between 1 minute and 14 days ago; live ones expire in 1 hour to 1 day.
    Sids are 32 URL-safe characters like the plugin's. Sorted by sid (the primary key), which is
    what an InnoDB table's clustered index looks like anyway and keeps the MySQL load fast; the
    expiry is uncorrelated with the rows' physical order, as in a table of rolling sessions.
    """
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    day, minute = 86400000, 60000
    rows = []
    for count, live_flag, low, high in ((expired, False, now_ms - 14 * day, now_ms - minute),
                                        (live, True, now_ms + 3600000, now_ms + day)):
        for _ in range(count):
            sid = base64.urlsafe_b64encode(rng.getrandbits(192).to_bytes(24, "big")).decode("ascii")
            rows.append((sid, rng.randint(low, high), live_flag))
    rows.sort()
    return rows


def instant_of(ms):
    return datetime.datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=(ms % 1000) * 1000)


# -- Loading ---------------------------------------------------------------------------------


def load_postgresql(db, table, rows):
    """COPY through psycopg2, COPY_ROWS rows at a time."""
    conn = db.connection()
    with conn.cursor() as cursor:
        for start in range(0, len(rows), COPY_ROWS):
            buffer = io.StringIO()
            for sid, ms, _ in rows[start:start + COPY_ROWS]:
                sess, expired = column_values("postgresql", instant_of(ms))
                buffer.write("%s\t%s\t%s\n" % (sid, sess, expired.isoformat()))
            buffer.seek(0)
            cursor.copy_expert("COPY %s (sid, sess, expired) FROM STDIN" % quoted("postgresql", table), buffer)
    db.execute_sql("VACUUM ANALYZE %s" % quoted("postgresql", table))


def load_mysql(db, table, rows):
    """Multi-row INSERTs of LOAD_CHUNK rows, LOAD_TXN_ROWS rows per transaction, through pymysql."""
    conn = db.connection()
    with conn.cursor() as cursor:
        for start in range(0, len(rows), LOAD_TXN_ROWS):
            cursor.execute("BEGIN")
            for chunk_start in range(start, min(start + LOAD_TXN_ROWS, len(rows)), LOAD_CHUNK):
                values = []
                for sid, ms, _ in rows[chunk_start:min(chunk_start + LOAD_CHUNK, start + LOAD_TXN_ROWS)]:
                    sess, expired = column_values("mysql", instant_of(ms))
                    # Sids are base64url, sess has no quote or backslash, the date is digits: safe literals.
                    values.append("('%s','%s','%s')" % (sid, sess, expired.strftime("%Y-%m-%d %H:%M:%S")))
                cursor.execute("INSERT INTO %s (sid, sess, expired) VALUES %s"
                               % (quoted("mysql", table), ",".join(values)))
            cursor.execute("COMMIT")
        cursor.execute("ANALYZE TABLE %s" % quoted("mysql", table))
        cursor.fetchall()


def check_formats(backend, store, table, instants):
    """Write one expired and one live row with store.set() and check the loader writes the same values."""
    db = store.db
    sess_col = "CAST(sess AS TEXT)" if backend == "postgresql" else "sess"
    written = {}
    for kind, instant in instants.items():
        sid = "format-check-" + kind
        store.set(sid, session_dict(instant))
        row = db.execute_sql("SELECT %s, expired FROM %s WHERE sid = %s"
                             % (sess_col, quoted(backend, table), db.param), (sid,)).fetchone()
        expected = column_values(backend, instant)
        if tuple(row) != expected:
            raise AssertionError("the loader's %s row %r differs from the store's %r" % (kind, expected, tuple(row)))
        written[kind] = sid
    return written


# -- The reader ------------------------------------------------------------------------------


class Reader(threading.Thread):
    """store.get(sid) in a loop on this thread's own connection (held open, as a pool would)."""

    def __init__(self, store, sid, pause):
        super().__init__(name="sweep-bench reader", daemon=True)
        self.store, self.sid, self.pause = store, sid, pause
        self.samples = []  # (start, seconds)
        self.misses = 0
        self.error = None
        self.stopping = threading.Event()
        self.started_reading = threading.Event()

    def run(self):
        clock, store, sid, samples = time.perf_counter, self.store, self.sid, self.samples
        try:
            with store.connection():
                while not self.stopping.is_set():
                    start = clock()
                    found = store.get(sid)
                    samples.append((start, clock() - start))
                    self.started_reading.set()
                    if found is None:
                        self.misses += 1
                    if self.pause:
                        time.sleep(self.pause)
        except Exception as exc:  # reported by the main thread
            self.error = exc
        finally:
            self.started_reading.set()

    def between(self, start, end):
        return [seconds for began, seconds in list(self.samples) if start <= began < end]

    def stop(self):
        self.stopping.set()
        self.join(30)


def percentile(values, fraction):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))]


# -- EXPLAIN ---------------------------------------------------------------------------------


def explain_batch(backend, store, batch, analyze):
    """The plan of one sweep batch statement, as the store runs it; with analyze, run and rolled back."""
    db, sql = store.db, store.dialect
    # MySQL/MariaDB read a batch's expired keys with a SELECT, then delete by key (the store's _KeyOrderSweep).
    statement, params = getattr(sql, "sweep_expired_keys", None) or sql.sweep_batch, (sql.now(), batch)
    statement = statement.split(" FOR ", 1)[1] if statement.startswith("SET STATEMENT") else statement  # MariaDB's
    if backend == "postgresql":
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "
    else:
        prefix = "ANALYZE FORMAT=JSON " if analyze else "EXPLAIN "
    with db.atomic() as transaction:
        cursor = db.execute_sql(prefix + statement, params)
        rows = cursor.fetchall()
        columns = [column[0] for column in cursor.description]
        transaction.rollback()
    if backend == "postgresql" or analyze:
        text = "\n".join(str(row[0]) for row in rows)
    else:
        text = "\n".join(" | ".join("%s=%s" % (name, value) for name, value in zip(columns, row)) for row in rows)
    shown = statement.replace(db.param, "%r", 1).replace(db.param, "%d", 1) % (str(params[0]), params[1])
    return "%s\n%s" % (shown, text)


# -- One run ---------------------------------------------------------------------------------


def run(backend, expired, live, *, batch_sizes=None, pause=0.0, reader_pause=0.001,
        idle_seconds=30.0, seed=1, explain=True, progress=log):
    """Measure the sweep on one database; a list of result dicts, one per batch size.

    batch_sizes: the sweep_batch_size values to try, each on a freshly loaded table
    (default: the store's default only). pause: seconds to wait between batches on top of the
    store's own rests (0, the default, is what store.sweep() does).
    """
    results = []
    for batch in batch_sizes or [DEFAULT_BATCH_SIZE]:
        results.append(_run_once(backend, expired, live, batch, pause, reader_pause, idle_seconds,
                                 seed, explain, progress))
    return results


def _run_once(backend, expired, live, batch, pause, reader_pause, idle_seconds, seed, explain, progress):
    if expired < 1 or live < 1:
        raise ValueError("need at least one expired and one live row")
    table = "sweep_bench_%d_%s" % (os.getpid(), "%08x" % random.getrandbits(32))
    db = open_database(backend)
    reader = None
    result = {"db": backend, "expired": expired, "live": live, "batch_size": batch, "table": table,
              "pause_s": pause}
    try:
        db.connect()
        store = PeeweeSessionStore(db, table_name=table, clear_interval=0, sweep_batch_size=batch)
        version = db.execute_sql("SELECT VERSION()").fetchone()[0]
        result["server"] = " ".join(version.split()[:2]) if backend == "postgresql" else version
        sql = store.dialect
        result["sweep_sql"] = getattr(sql, "sweep_batch", None) or "; ".join(
            (sql.sweep_expired_keys, sql.sweep_window[True], sql.delete_expired_keys(3)))

        # The table: two rows written by the store, the rest bulk-loaded in the same formats.
        started = time.perf_counter()
        rows = make_rows(expired - 1, live - 1, seed)
        now = datetime.datetime.now(UTC)
        store_sids = check_formats(backend, store, table, {
            "expired": (now - datetime.timedelta(days=1)).replace(microsecond=123000),
            "live": (now + datetime.timedelta(hours=12)).replace(microsecond=456000),
        })
        progress("%s: loading %d expired and %d live rows into %s" % (backend, expired, live, table))
        (load_postgresql if backend == "postgresql" else load_mysql)(db, table, rows)
        live_sids = {sid for sid, _, is_live in rows if is_live} | {store_sids["live"]}
        del rows
        result["load_s"] = time.perf_counter() - started
        stats = store.stats()
        if (stats["expired"], stats["live"]) != (expired, live):
            raise AssertionError("loaded %(expired)d expired and %(live)d live rows" % stats)
        result["table_mb"] = (stats["table_bytes"] or 0) / 1e6
        progress("%s: loaded in %.1f s (%.0f MB with indexes)" % (backend, result["load_s"], result["table_mb"]))

        if explain:
            result["explain"] = explain_batch(backend, store, batch, analyze=False)
            result["explain_analyze_before"] = explain_batch(backend, store, batch, analyze=True)

        # The reader: warm up, then idle, then during the sweep.
        reader_sid = sorted(live_sids)[len(live_sids) // 2]
        reader = Reader(store, reader_sid, reader_pause)
        reader.start()
        reader.started_reading.wait(30)
        time.sleep(1.0)  # warm-up: connection, caches, plans
        idle_start = time.perf_counter()
        time.sleep(idle_seconds)
        idle_end = time.perf_counter()

        result["loadavg_1min"] = os.getloadavg()[0]
        progress("%s: sweeping (batch size %d, load average %.2f)" % (backend, batch, result["loadavg_1min"]))
        batch_seconds, counts = [], []
        clock = time.perf_counter
        # Each DELETE is timed where it runs, in execute_sql: the sweep rests between batches, and the
        # rest (no statement running, no lock held) is not part of how long a batch holds its locks.
        execute_sql = store.db.execute_sql

        # MySQL/MariaDB walk a backlog in key order: each window of keys is read (without locks) before
        # its expired rows are deleted. PostgreSQL, after walking a backlog in page order, reads its
        # expired index a slice at a time (without locks). Those reads are timed too, apart from the DELETEs.
        windows = set(getattr(store.dialect, "sweep_window", {}).values())
        window_seconds = []
        page_deletes = getattr(store.dialect, "sweep_pages", None)  # a DELETE in a WITH
        index_slice = getattr(store.dialect, "index_slice", None)
        slice_seconds = []

        def timed_execute(sql, params=None, *args, **kwargs):
            began = clock()
            try:
                return execute_sql(sql, params, *args, **kwargs)
            finally:
                if sql.startswith("DELETE") or sql == page_deletes:
                    batch_seconds.append(clock() - began)
                elif sql in windows:
                    window_seconds.append(clock() - began)
                elif sql == index_slice:
                    slice_seconds.append(clock() - began)

        store.db.execute_sql = timed_execute
        try:
            with store.connection():
                sweep_start = clock()
                for count in store.sweep_batches():
                    counts.append(count)
                    if pause:
                        time.sleep(pause)  # between statements: no statement running, no locks held
                sweep_end = clock()
                # The next sweep, straight away (before any vacuum): what the first one left it costs.
                swept = len(batch_seconds)
                next_start = clock()
                next_rows = store.sweep()
                next_sweep_s = clock() - next_start
                next_seconds = batch_seconds[swept:]
                del batch_seconds[swept:]
        finally:
            store.db.execute_sql = execute_sql
        time.sleep(0.2)
        reader.stop()
        if reader.error is not None:
            raise RuntimeError("the reader failed: %r" % (reader.error,))

        idle = reader.between(idle_start, idle_end)
        during = reader.between(sweep_start, sweep_end)
        ms = 1000.0
        result.update({
            "sweep_s": sweep_end - sweep_start,
            "rows_per_s": sum(counts) / max(sweep_end - sweep_start, 1e-9),
            "batches": len(batch_seconds),  # DELETE statements (not the index slices)
            "batch_max_ms": max(batch_seconds) * ms,
            "batch_p50_ms": percentile(batch_seconds, 0.50) * ms,
            "batch_p99_ms": percentile(batch_seconds, 0.99) * ms,
            "batches_over_100ms": sum(1 for seconds in batch_seconds if seconds * ms > BATCH_MS_TARGET),
            "first_10_batches_ms": sum(batch_seconds[:10]) / len(batch_seconds[:10]) * ms,
            "last_10_batches_ms": sum(batch_seconds[-10:]) / len(batch_seconds[-10:]) * ms,
            "batch_ms_series": [round(seconds * ms, 2) for seconds in batch_seconds],
            "window_reads": len(window_seconds),
            "window_max_ms": max(window_seconds) * ms if window_seconds else None,
            "window_p50_ms": percentile(window_seconds, 0.50) * ms if window_seconds else None,
            "index_slices": len(slice_seconds),
            "index_slice_max_ms": max(slice_seconds) * ms if slice_seconds else None,
            "index_slice_p50_ms": percentile(slice_seconds, 0.50) * ms if slice_seconds else None,
            "index_slice_ms_series": [round(seconds * ms, 2) for seconds in slice_seconds],
            "reads_idle": len(idle),
            "reads_during": len(during),
            "idle_p50_ms": percentile(idle, 0.50) * ms,
            "idle_p99_ms": percentile(idle, 0.99) * ms,
            "during_p50_ms": percentile(during, 0.50) * ms if during else None,
            "during_p99_ms": percentile(during, 0.99) * ms if during else None,
            "during_max_ms": max(during) * ms if during else None,
            "reader_misses": reader.misses,
            "next_sweep_s": next_sweep_s,
            "next_sweep_rows": next_rows,
            "next_sweep_max_ms": max(next_seconds) * ms if next_seconds else None,
            # The target covers every DELETE of both sweeps.
            "longest_delete_ms": max(batch_seconds + next_seconds) * ms,
            "rows_deleted": sum(counts),
        })
        result["p99_ratio"] = (result["during_p99_ms"] / result["idle_p99_ms"]) if during else None

        if explain:
            result["explain_analyze_after"] = explain_batch(backend, store, batch, analyze=True)

        # Afterwards: exactly the expired rows went, and every live row is still there.
        remaining = {row[0] for row in db.execute_sql("SELECT sid FROM %s" % quoted(backend, table)).fetchall()}
        result["deleted_ok"] = result["rows_deleted"] == expired
        result["live_intact"] = remaining == live_sids
        result["rows_left"] = len(remaining)
        result["ok"] = bool(
            result["deleted_ok"] and result["live_intact"] and not reader.misses
            and result["p99_ratio"] is not None and result["p99_ratio"] <= P99_RATIO_TARGET
            and result["longest_delete_ms"] <= BATCH_MS_TARGET
        )
        progress("%s: swept %d rows in %.1f s, %d batches, longest %.1f ms" % (
            backend, result["rows_deleted"], result["sweep_s"], result["batches"], result["batch_max_ms"]))
        return result
    finally:
        if reader is not None and reader.is_alive():
            reader.stop()
        try:
            db.close()
        except Exception:
            pass
        drop_table(backend, table)


def drop_table(backend, table):
    """Drop the run's table on a fresh connection (the run's own may be broken)."""
    db = open_database(backend)
    try:
        db.connect()
        db.execute_sql("DROP TABLE IF EXISTS %s" % quoted(backend, table))
    except Exception as exc:
        log("could not drop %s on %s: %r" % (table, backend, exc))
    finally:
        db.close()


# -- Output ----------------------------------------------------------------------------------


def _f(value, digits=1):
    return "-" if value is None else ("%.*f" % (digits, value))


def variant(result):
    """How a run differs from the store's own sweep ("" for none)."""
    parts = []
    if result["pause_s"]:
        parts.append("pause %g ms" % (result["pause_s"] * 1000))
    return "".join(", " + part for part in parts)


def _target(ok):
    return "ok" if ok else "MISSED"


COLUMNS = [
    ("db", lambda r: "%s (%s)%s" % (r["db"], r["server"], variant(r))),
    ("expired / live", lambda r: "%d / %d" % (r["expired"], r["live"])),
    ("batch size", lambda r: "%d" % r["batch_size"]),
    ("batches", lambda r: "%d" % r["batches"]),
    ("sweep s", lambda r: _f(r["sweep_s"], 2)),
    ("rows/s", lambda r: _f(r["rows_per_s"], 0)),
    ("longest batch ms", lambda r: _f(r["batch_max_ms"])),
    ("batch p50 / p99 ms", lambda r: "%s / %s" % (_f(r["batch_p50_ms"]), _f(r["batch_p99_ms"]))),
    ("first / last 10 batches ms", lambda r: "%s / %s" % (_f(r["first_10_batches_ms"]), _f(r["last_10_batches_ms"]))),
    ("batches > 100 ms", lambda r: "%d" % r["batches_over_100ms"]),
    ("key windows: count, p50 / longest read ms", lambda r: "%d, %s / %s" % (
        r.get("window_reads", 0), _f(r.get("window_p50_ms")), _f(r.get("window_max_ms")))
     if r.get("window_reads") else "none"),
    ("index slices: count, p50 / longest read ms", lambda r: "%d, %s / %s" % (
        r["index_slices"], _f(r["index_slice_p50_ms"]), _f(r["index_slice_max_ms"]))
     if r.get("index_slices") else "none"),
    ("reader idle p50 / p99 ms", lambda r: "%s / %s" % (_f(r["idle_p50_ms"], 2), _f(r["idle_p99_ms"], 2))),
    ("reader during p50 / p99 ms", lambda r: "%s / %s" % (_f(r["during_p50_ms"], 2), _f(r["during_p99_ms"], 2))),
    ("p99 during / idle", lambda r: "-" if r["p99_ratio"] is None else "%.2fx" % r["p99_ratio"]),
    ("reads idle / during", lambda r: "%d / %d" % (r["reads_idle"], r["reads_during"])),
    ("deleted", lambda r: "%d%s" % (r["rows_deleted"], "" if r["deleted_ok"] else " (WRONG)")),
    ("live intact", lambda r: ("yes" if r["live_intact"] else "NO (%d rows left)" % r["rows_left"])
     + ("" if not r["reader_misses"] else ", %d reader misses" % r["reader_misses"])),
    ("next sweep: rows, s, longest ms", lambda r: "%d, %s, %s" % (
        r["next_sweep_rows"], _f(r["next_sweep_s"], 2), _f(r["next_sweep_max_ms"]))),
    ("load avg", lambda r: "%.1f" % r["loadavg_1min"]),
    ("targets", lambda r: "p99 %s, batch %s" % (
        _target(r["p99_ratio"] is not None and r["p99_ratio"] <= P99_RATIO_TARGET),
        _target(r["longest_delete_ms"] <= BATCH_MS_TARGET))),
]


def markdown_table(results):
    lines = ["| " + " | ".join(title for title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results:
        lines.append("| " + " | ".join(cell(r) for _, cell in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", action="append", choices=sorted(URLS), required=True,
                        help="postgresql or mysql (repeat for both)")
    parser.add_argument("--expired", type=int, default=1000000, help="expired rows (default: %(default)s)")
    parser.add_argument("--live", type=int, default=100000, help="live rows (default: %(default)s)")
    parser.add_argument("--batch", type=int, action="append",
                        help="sweep_batch_size to measure (repeatable; default: the store's, %d)" % DEFAULT_BATCH_SIZE)
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds to wait between batches on top of the store's own rests (default 0)")
    parser.add_argument("--reader-pause", type=float, default=0.001,
                        help="seconds the reader sleeps between reads (default: %(default)s)")
    parser.add_argument("--idle-seconds", type=float, default=30.0,
                        help="how long the reader is measured before the sweep (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="FILE", help="also write the results (with every batch's time) here")
    args = parser.parse_args(argv)

    results = []
    for backend in args.db:
        results += run(backend, args.expired, args.live, batch_sizes=args.batch,
                       pause=args.pause, reader_pause=args.reader_pause,
                       idle_seconds=args.idle_seconds, seed=args.seed)
    print(markdown_table(results))
    for r in results:
        print("\n### %s, batch size %d%s: one sweep batch statement\n" % (
            r["db"], r["batch_size"], variant(r)))
        for key, title in (("explain", "EXPLAIN, before the sweep"),
                           ("explain_analyze_before", "EXPLAIN ANALYZE of one batch before the sweep (rolled back)"),
                           ("explain_analyze_after", "EXPLAIN ANALYZE of one batch after the sweep (rolled back)")):
            if r.get(key):
                print("%s:\n\n```\n%s\n```\n" % (title, r[key]))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1, default=str)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
