"""The command line: sql, create-table, sweep, stats, destroy, clear; clear messages and exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import database_url, drop_table
from peewee_sessions import EXIT_BAD_URL, EXIT_NO_TABLE, EXIT_UNREACHABLE, EXIT_USAGE, PeeweeSessionStore, main

ROOT = Path(__file__).resolve().parent.parent
LIVE = {"cookie": {"expires": "2099-01-01T00:00:00.000Z"}}
EXPIRED = {"cookie": {"expires": "2001-01-01T00:00:00.000Z"}}


@pytest.fixture
def cli(backend, db, table_name, tmp_path, capsys):
    """Runs the command line in-process against the test's database and table: (exit code, stdout, stderr)."""
    url = database_url(backend, tmp_path)
    with db.connection_context():
        pass  # the database exists (SQLite: the file), the table not yet

    def run(*args, table=True):
        code = main(["--db", url] + (["--table", table_name] if table else []) + list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield run
    drop_table(db, table_name)


@pytest.fixture
def filled(db, table_name):
    store = PeeweeSessionStore(db, table_name=table_name, clear_interval=0)
    for i in range(5):
        store.set("live-%d" % i, LIVE)
    for i in range(7):
        store.set("dead-%d" % i, EXPIRED)
    return store


def test_create_table_then_again(cli, db, table_name):
    assert cli("create-table") == (0, "table %s created\n" % table_name, "")
    assert cli("create-table") == (0, "table %s already exists\n" % table_name, "")
    with db.connection_context():
        assert db.table_exists(table_name)


def test_sql_for_the_connected_database_creates_a_working_table(cli, db, table_name):
    code, out, _ = cli("sql")
    assert code == 0 and "CREATE TABLE" in out and table_name + "_expired_index" in out
    with db.connection_context():
        for statement in out.split(";"):
            if statement.strip():
                db.execute_sql(statement)
    store = PeeweeSessionStore(db, table_name=table_name, create_table=False, clear_interval=0)
    store.set("a", LIVE)
    assert store.get("a") == LIVE


@pytest.mark.parametrize("dialect, expected", [
    ("postgresql", 'CREATE TABLE IF NOT EXISTS "web_sessions" ("token" VARCHAR(255) NOT NULL PRIMARY KEY, '
                   '"sess" JSON NOT NULL, "expired" TIMESTAMP WITH TIME ZONE NOT NULL)'),
    ("mysql", "CREATE TABLE IF NOT EXISTS `web_sessions` (`token` VARCHAR(255) CHARACTER SET utf8mb4 "
              "COLLATE utf8mb4_bin NOT NULL PRIMARY KEY, "
              "`sess` JSON NOT NULL, `expired` DATETIME NOT NULL)"),
    ("sqlite", 'CREATE TABLE IF NOT EXISTS "web_sessions" ("token" VARCHAR(255) NOT NULL PRIMARY KEY, '
               '"sess" TEXT NOT NULL, "expired" DATETIME NOT NULL)'),
])
def test_sql_for_a_dialect_needs_no_database(capsys, dialect, expected):
    assert main(["--table", "web_sessions", "--sid-field", "token", "sql", "--dialect", dialect]) == 0
    out = capsys.readouterr().out
    assert out.startswith(expected + ";\n")
    assert "web_sessions_expired_index" in out


def test_sweep(cli, filled):
    code, out, err = cli("sweep", "--batch", "3")
    assert (code, out) == (0, "swept 7 expired sessions\n")
    assert err == ""  # progress only when stderr is a terminal
    assert filled.length() == 5 and filled.stats()["expired"] == 0


def test_stats(cli, filled):
    code, out, _ = cli("stats", "--json")
    stats = json.loads(out)
    assert code == 0
    assert stats["live"] == 5 and stats["expired"] == 7
    assert stats["soonest_expiry"] == stats["latest_expiry"] == "2099-01-01T00:00:00.000Z"
    assert stats["table_bytes"] is None or stats["table_bytes"] > 0
    code, out, _ = cli("stats")
    assert "live:" in out and "expired:" in out and "2099-01-01T00:00:00.000Z" in out


def test_stats_on_an_empty_table(cli, filled):
    filled.clear()
    stats = json.loads(cli("stats", "--json")[1])
    assert stats["live"] == 0 and stats["soonest_expiry"] is None


def test_destroy(cli, filled):
    assert cli("destroy", "live-1", "live-2", "nope") == (0, "destroyed 2 of 3 sessions\n", "")
    assert filled.get("live-1") is None and filled.get("live-3") is not None


def test_clear_needs_yes(cli, filled):
    code, out, err = cli("clear")
    assert code == EXIT_USAGE and "--yes" in err
    assert filled.length() == 5
    assert cli("clear", "--yes") == (0, "cleared 12 sessions\n", "")


@pytest.mark.parametrize("command", [["sweep"], ["stats"], ["destroy", "x"], ["clear", "--yes"]])
def test_a_missing_table_is_its_own_exit_code(cli, table_name, command):
    code, out, err = cli(*command)
    assert code == EXIT_NO_TABLE
    assert table_name in err and "create-table" in err and "Traceback" not in err


def run_module(*args, env=None):
    environment = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "peewee_sessions"] + list(args), capture_output=True,
                          text=True, timeout=60, env=environment)


@pytest.mark.parametrize("url, code", [
    ("nosuch://x/y", EXIT_BAD_URL),
    ("not a url at all", EXIT_BAD_URL),
    ("postgresql://postgres@127.0.0.1:1/test", EXIT_UNREACHABLE),
    ("mysql://root@127.0.0.1:1/test", EXIT_UNREACHABLE),
    ("sqlite:////no/such/directory/x.db", EXIT_UNREACHABLE),
])
def test_bad_urls_and_unreachable_servers_exit_cleanly(url, code):
    result = run_module("--db", url, "stats")
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("peewee-sessions: ") and "Traceback" not in result.stderr


def test_the_url_can_come_from_the_environment(tmp_path):
    url = "sqlite:///%s" % (tmp_path / "env.db")
    result = run_module("create-table", env={"PEEWEE_SESSIONS_DB": url})
    assert (result.returncode, result.stdout) == (0, "table sessions created\n")


def test_no_database_is_a_usage_error():
    environment = {k: v for k, v in os.environ.items() if k != "PEEWEE_SESSIONS_DB"}
    result = subprocess.run([sys.executable, "-m", "peewee_sessions", "stats"], capture_output=True, text=True,
                            timeout=60, env=dict(environment, PYTHONPATH=str(ROOT)))
    assert result.returncode == EXIT_USAGE and "PEEWEE_SESSIONS_DB" in result.stderr


def test_sweep_shows_progress_on_a_terminal(tmp_path):
    pytest.importorskip("pty")
    import pty

    url = "sqlite:///%s" % (tmp_path / "tty.db")
    store = PeeweeSessionStore(__import__("peewee").SqliteDatabase(str(tmp_path / "tty.db")), clear_interval=0)
    for i in range(25):
        store.set("dead-%d" % i, EXPIRED)
    store.close()
    primary, secondary = pty.openpty()
    result = subprocess.run([sys.executable, "-m", "peewee_sessions", "--db", url, "sweep", "--batch", "10"],
                            stdout=subprocess.PIPE, stderr=secondary, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    os.close(secondary)
    progress = os.read(primary, 4096).decode()
    os.close(primary)
    assert result.stdout.decode() == "swept 25 expired sessions\n"
    assert "\rswept 10..." in progress and "\rswept 25..." in progress


def test_the_console_script_is_declared():
    pyproject = (ROOT / "pyproject.toml").read_text()
    scripts = pyproject.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert 'peewee-sessions = "peewee_sessions:main"' in scripts


@pytest.mark.parametrize("option", [["--table", "bad name"], ["--sid-field", "1x"], ["--table", "x;drop"]])
def test_a_bad_identifier_is_a_usage_error(option, tmp_path):
    result = run_module("--db", "sqlite:///%s" % (tmp_path / "x.db"), *option, "stats")
    assert result.returncode == EXIT_USAGE and "Traceback" not in result.stderr and "identifier" in result.stderr


def test_a_mistyped_sqlite_path_creates_no_file(tmp_path):
    result = run_module("--db", "sqlite:///%s" % (tmp_path / "typo.db"), "stats")
    assert result.returncode == EXIT_UNREACHABLE and "no SQLite database" in result.stderr
    assert not (tmp_path / "typo.db").exists()
