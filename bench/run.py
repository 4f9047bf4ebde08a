"""Every benchmark of the performance issue in one run, written to BENCHMARKS.md.

    pip install -r requirements-dev.txt -r bench/requirements.txt && apt-get install wrk
    python bench/run.py                 # 11 to 14 minutes on 2 cores; --quick for a smaller run

1. store operations against the raw drivers and connect-session-knex (bench/store_bench.py),
2. HTTP under gunicorn against a no-store app, hand-written raw-SQL floors (on the pool and without one),
   Beaker and Flask-Session (bench/http_bench.py),
3. queries per request (bench/queries.py),
4. the sweep of 1,000,000 expired rows among 100,000 live ones (bench/sweep_bench.py).
Every target is a ratio between two things measured in this run. What follows the notes marker
in an existing BENCHMARKS.md (the explanations, written by hand) is kept.
"""

import argparse
import datetime
import os
import platform
import sqlite3
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import http_bench  # noqa: E402
import queries  # noqa: E402
import store_bench  # noqa: E402
import sweep_bench  # noqa: E402

import peewee  # noqa: E402

OUTPUT = HERE.parent / "BENCHMARKS.md"
NOTES_MARKER = "<!-- notes: everything below is written by hand and kept by bench/run.py -->"


def command_output(*command):
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not found"


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next(line.split(":", 1)[1].strip() for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return "\n".join([
        "- %s, %d cores, %s memory; load average at the start: %s" % (cpu, os.cpu_count(), memory,
                                                                      " ".join(map(str, os.getloadavg()))),
        "- Python %s, peewee %s, SQLite %s, %s, %s, Node %s" % (
            platform.python_version(), peewee.__version__, sqlite3.sqlite_version,
            command_output("psql", "--version"), command_output("mariadb", "--version").split(",")[0],
            command_output("node", "--version")),
        "- The load generator, the app and both database servers share those cores.",
    ])


def verdict(met):
    return "met" if met else "**missed**"


def store_section(backends, ops):
    rows = []
    for backend in backends:
        rows += store_bench.run(backend, ops)
    lines = [store_bench.markdown(rows), "", "Targets:"]
    for row in rows:
        if row["time ratio"] is None:
            continue
        limit = 2.0 if (row["database"], row["operation"]) == ("sqlite", "get") else 1.2
        if row["operation"] == "set (8 threads)":
            continue  # not a target; shown for the contention it adds
        lines.append("- %s %s: %.2f× the raw driver's time per operation (target ≤ %.1f×): %s" % (
            row["database"], row["operation"], row["time ratio"], limit, verdict(row["time ratio"] <= limit)))
    for backend in backends:
        ours = next(r for r in rows if r["database"] == backend and r["operation"] == "set")
        knex = next((r for r in rows if r["database"] == backend and "knex" in r["operation"]), None)
        if knex:
            lines.append("- %s: 10,000 sequential sets %.2f× as fast as connect-session-knex's (target > 1): %s" % (
                backend, ours["store ops/s"] / knex["store ops/s"], verdict(ours["store ops/s"] > knex["store ops/s"])))
        else:
            lines.append("- %s: connect-session-knex not measured (node or tests/node_app's packages missing)" % backend)
    return "\n".join(lines)


def http_section(backends, seconds, warmup):
    rows = []
    for backend in backends:
        rows += http_bench.run(backend, seconds=seconds, warmup=warmup)
    return "\n".join([http_bench.format_table(rows), "", "Targets (the issue sets the first two for PostgreSQL):",
                      "\n".join(http_bench.target_lines(rows)), "",
                      "For reference, not targets: the hand-written floors (what a store on this pool, or on none, "
                      "can reach), and the plugin on a pool that doesn't ping:",
                      "\n".join(http_bench.floor_lines(rows))])


def queries_section(backends):
    rows = []
    for backend in backends:
        rows += queries.run(backend)
    expected = {"doesn't use its session": 0, "reads it (touch not due)": 1, "changes it": 2}
    met = all(len(row["statements"]) == expected[row["request"]] for row in rows if row["request"] in expected)
    return "\n".join([queries.markdown(rows), "",
                      "Target: 0 for a route that doesn't use its session, 1 for a read-only use, 2 for a change, "
                      "on every database: %s" % verdict(met)])


def sweep_section(backends, expired, live):
    results = []
    for backend in backends:
        results += sweep_bench.run(backend, expired, live)
    lines = [sweep_bench.markdown_table(results), "", "Targets:"]
    for r in results:
        ratio = r["during_p99_ms"] / r["idle_p99_ms"] if r["during_p99_ms"] and r["idle_p99_ms"] else None
        lines.append("- %s: reader p99 during the sweep %.2f× its idle p99 (target ≤ 3×): %s; longest DELETE "
                     "of this sweep and the next %.1f ms (target about 100 ms): %s; %d rows deleted of %d, "
                     "live rows intact: %s" % (
                         r["db"], ratio or 0, verdict(ratio is not None and ratio <= 3), r["longest_delete_ms"],
                         verdict(r["longest_delete_ms"] <= 100), r["rows_deleted"], expired,
                         "yes" if r.get("live_intact", r["rows_deleted"] == expired) else "**no**"))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for trying the script")
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args()
    ops, seconds, warmup, expired, live = (2000, 4, 1, 50000, 5000) if args.quick else (10000, 10, 2, 1000000, 100000)
    started = datetime.datetime.now(datetime.timezone.utc)
    sections = [
        ("Machine", machine()),
        ("1. Store operations", store_section(["sqlite", "postgresql", "mysql"], ops)),
        ("2. HTTP: Bottle under gunicorn (gthread, 1 worker, 4 threads), wrk on loopback",
         http_section(["postgresql", "mysql", "sqlite"], seconds, warmup)),
        ("3. Queries per request", queries_section(["sqlite", "postgresql", "mysql"])),
        ("4. Sweep: %d expired rows among %d live ones, while a reader calls get()" % (expired, live),
         sweep_section(["postgresql", "mysql"], expired, live)),
    ]
    old = Path(args.output).read_text() if Path(args.output).exists() else ""
    notes = old.split(NOTES_MARKER, 1)[1] if NOTES_MARKER in old else "\n\n## Notes\n\n(none yet)\n"
    text = ["# Benchmarks", "",
            "Measured by `python bench/run.py` on %s (%.0f minutes)%s. Re-run it to refresh every table below; "
            "the machine is noisy, so read ratios measured in the same run, not absolute numbers." % (
                started.strftime("%Y-%m-%d %H:%M UTC"),
                (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 60,
                " with --quick" if args.quick else "")]
    for title, body in sections:
        text += ["", "## " + title, "", body]
    Path(args.output).write_text("\n".join(text) + "\n\n" + NOTES_MARKER + notes)
    print("wrote", args.output)


if __name__ == "__main__":
    main()
