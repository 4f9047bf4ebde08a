"""Every benchmark of the performance issue in one run, written to BENCHMARKS.md.

    pip install -r requirements-dev.txt -r bench/requirements.txt && apt-get install wrk
    python bench/run.py                 # about 35 minutes on 2 cores; --quick for a smaller run

1. store operations against the raw drivers and connect-session-knex (bench/store_bench.py),
2. HTTP: the session cost per request of each store, --http-runs times (3) over every database
   (bench/http_bench.py), with a chart of it (docs/session_cost.png); each run gives each app 5 rounds
   of a 2-second /hello turn and a 2-second /incr turn back to back per database, and its cost is the
   median of the 5 rounds' (about 33 of the 35 minutes: some 45 s a round for the 7 apps),
3. queries per request (bench/queries.py),
4. the sweep of 1,000,000 expired rows among 100,000 live ones (bench/sweep_bench.py).
Every target is a ratio between two things measured in the same run. What follows the notes marker
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
CHART = HERE.parent / "docs" / "session_cost.png"
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


def http_section(backends, seconds, warmup, runs, chart):
    runs_rows = []
    for index in range(runs):
        rows = []
        for backend in backends:
            def progress(message, index=index):
                print("run %d/%d: %s" % (index + 1, runs, message), file=sys.stderr, flush=True)

            rows += http_bench.run(backend, seconds=seconds, warmup=warmup, progress=progress)
        runs_rows.append(rows)
    costs = [http_bench.costs(rows) for rows in runs_rows]
    keys = list(costs[-1])
    lines = ["The last run:", "", http_bench.format_table(runs_rows[-1]), "",
             "Session cost per request (ms), each run:", "",
             "| database | app | %s |" % " | ".join("run %d" % (i + 1) for i in range(runs)),
             "|---|---|%s" % ("---:|" * runs)]
    for key in keys:
        lines.append("| %s | %s | %s |" % (key[0], key[1], " | ".join(
            "%.3f" % c[key]["ms"] if key in c else "-" for c in costs)))
    lines += ["", "![Session cost per request, by store and database](docs/%s)" % chart.name, "",
              "Targets (each a ratio of two session costs measured in the same run; the range over %d runs):"
              % runs]
    by_target = {}
    for rows in runs_rows:
        for database, ours, theirs, ratio, limit, met in http_bench.targets(rows):
            by_target.setdefault((database, ours, theirs, limit), []).append(ratio)
    for (database, ours, theirs, limit), ratios in by_target.items():
        met = sum(ratio <= limit for ratio in ratios)
        worst = max(ratios)
        verdict_text = ("met in every run" if met == len(ratios) else
                        "**missed** in %d of %d runs, by up to %.2f (%.0f%%)" % (
                            len(ratios) - met, len(ratios), worst - limit, 100 * (worst - limit) / limit))
        lines.append("- %s: %s / %s = %.2f-%.2f (target ≤ %.2f): %s" % (
            database, ours, theirs, min(ratios), worst, limit, verdict_text))
    wrong = sum(row["wrong_counters"] for rows in runs_rows for row in rows)
    errors = sum(row["errors"] for rows in runs_rows for row in rows)
    lines.append("- /incr and /hello over all runs: %d wrong counters, %d errors (target 0 and 0): %s" % (
        wrong, errors, verdict(not wrong and not errors)))
    draw_chart(costs, chart)
    return "\n".join(lines)


def draw_chart(costs, path):
    """Grouped bars: each store's session cost per request on each database (median of the runs, min-max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    databases = list(dict.fromkeys(database for c in costs for database, _ in c))
    apps = [name for name, _, _ in http_bench.APPS if any((d, name) in c for c in costs for d in databases)]
    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=100)
    width = 0.8 / len(apps)
    for i, app in enumerate(apps):
        medians, low, high = [], [], []
        for database in databases:
            values = sorted(c[(database, app)]["ms"] for c in costs if (database, app) in c)
            median = values[len(values) // 2] if values else 0
            medians.append(median)
            low.append(median - values[0] if values else 0)
            high.append(values[-1] - median if values else 0)
        positions = [d + (i - (len(apps) - 1) / 2) * width for d in range(len(databases))]
        ax.bar(positions, medians, width, yerr=[low, high], capsize=2, label=app,
               hatch="//" if app in http_bench.OURS else None, edgecolor="black", linewidth=0.5)
    ax.set_xticks(range(len(databases)))
    ax.set_xticklabels(["MariaDB" if d == "mysql" else "PostgreSQL" if d == "postgresql" else "SQLite"
                        for d in databases])
    ax.set_ylabel("session cost per request (ms), median of rounds\n"
                  "1/(req/s of /incr) - 1/(req/s of /hello)")
    ax.set_title("What a session costs per request (median of %d runs; bars: min-max; hatched: "
                 "peewee-sessions)" % len(costs), fontsize=10)
    ax.legend(fontsize=8, ncol=4)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def queries_section(backends):
    rows = []
    for backend in backends:
        rows += queries.run(backend)
    expected = {"doesn't use its session": 0, "reads it (touch not due)": 1, "changes it": 2}
    met = all(len(row["statements"]) == expected[row["request"]] for row in rows if row["request"] in expected)
    connected = sum(row["connects"] for row in rows)
    return "\n".join([queries.markdown(rows), "",
                      "Target: 0 for a route that doesn't use its session, 1 for a read-only use, 2 for a change, "
                      "on every database: %s; connections opened by these requests: %d" % (verdict(met),
                                                                                          connected)])


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


def write(args, started, sections, notes):
    machine_text = sections[0][1] + "\n- Load average at the end: %s" % " ".join(
        "%.2f" % load for load in os.getloadavg())
    text = ["# Benchmarks", "",
            "Measured by `python bench/run.py` on %s (%.0f minutes)%s. Re-run it to refresh every table below; "
            "the machine is noisy, so read ratios measured in the same run, not absolute numbers." % (
                started.strftime("%Y-%m-%d %H:%M UTC"),
                (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 60,
                " with --quick" if args.quick else "")]
    for title, body in [("Machine", machine_text)] + sections[1:]:
        text += ["", "## " + title, "", body]
    Path(args.output).write_text("\n".join(text) + "\n\n" + NOTES_MARKER + notes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for trying the script")
    parser.add_argument("--output", default=str(OUTPUT))
    parser.add_argument("--http-runs", type=int, default=3, help="runs of the HTTP benchmark (default 3)")
    parser.add_argument("--no-sweep", action="store_true", help="leave out the sweep benchmark (section 4)")
    args = parser.parse_args()
    # HTTP seconds per app and route: in 2-s turns, 10 s is 5 rounds (a median of 5 costs) a database.
    quick, full = (2000, 2, 1, 50000, 5000), (10000, 10, 1, 1000000, 100000)
    ops, seconds, warmup, expired, live = quick if args.quick else full
    started = datetime.datetime.now(datetime.timezone.utc)
    old = Path(args.output).read_text() if Path(args.output).exists() else ""
    notes = old.split(NOTES_MARKER, 1)[1] if NOTES_MARKER in old else "\n\n## Notes\n\n(none yet)\n"
    sections = [("Machine", machine())]
    parts = [
        ("1. Store operations", lambda: store_section(["sqlite", "postgresql", "mysql"], ops)),
        ("2. HTTP: what a session costs per request (gunicorn gthread 1 worker × 4 threads, or one Node "
         "process; wrk, 4 connections)",
         lambda: http_section(["postgresql", "mysql", "sqlite"], seconds, warmup, args.http_runs, CHART)),
        ("3. Queries per request", lambda: queries_section(["sqlite", "postgresql", "mysql"])),
    ]
    if not args.no_sweep:
        title = "4. Sweep: %d expired rows among %d live ones, while a reader calls get()" % (expired, live)
        parts.append((title, lambda: sweep_section(["postgresql", "mysql"], expired, live)))
    for title, section in parts:  # the file is written after each part: a part that fails keeps the others
        sections.append((title, section()))
        write(args, started, sections, notes)
    print("wrote", args.output)


if __name__ == "__main__":
    main()
