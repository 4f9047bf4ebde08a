"""The command line: sql, create-table, sweep, stats, destroy, clear; clear messages and exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import database_url, drop_table, require_backend, server_url
from peewee_sessions import (EXIT_BAD_URL, EXIT_NO_TABLE, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE,
                             PeeweeSessionStore, __version__, main)

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


# -- Options in either place, aliases, --version (issue 23) -------------------------------------


def test_options_go_before_or_after_the_command(backend, db, table_name, tmp_path, capsys):
    url = database_url(backend, tmp_path)
    try:
        assert main(["create-table", "--db", url, "--table", table_name, "--sid-field", "token"]) == 0
        assert main(["--db", url, "stats", "--table", table_name, "--json"]) == 0
        assert main(["--table", "wrong", "stats", "--db", url, "--table", table_name]) == 0  # after wins
        out = capsys.readouterr().out
        assert out.startswith("table %s created\n" % table_name) and out.count('"live": 0') == 1
        with db.connection_context():
            assert [column.name for column in db.get_columns(table_name)][0] == "token"
    finally:
        drop_table(db, table_name)


def test_options_after_the_command_keep_the_environment_s_database(tmp_path):
    url = "sqlite:///%s" % (tmp_path / "env.db")
    result = run_module("create-table", "--table", "after", env={"PEEWEE_SESSIONS_DB": url})
    assert (result.returncode, result.stdout) == (0, "table after created\n")


@pytest.mark.parametrize("alias, dialect", [("postgres", "postgresql"), ("mariadb", "mysql")])
def test_dialect_aliases_as_the_url_schemes_have_them(capsys, alias, dialect):
    assert main(["sql", "--dialect", dialect]) == 0
    expected = capsys.readouterr().out
    assert main(["sql", "--dialect", alias]) == 0
    assert capsys.readouterr().out == expected


def test_version():
    result = run_module("--version")
    assert (result.returncode, result.stdout) == (0, "peewee-sessions %s\n" % __version__)


@pytest.mark.parametrize("url", ["sqlite://cli.db", "sqlite+pool://dir/cli.db"])
def test_a_sqlite_url_with_two_slashes_is_explained(url, tmp_path):
    result = subprocess.run([sys.executable, "-m", "peewee_sessions", "--db", url, "create-table"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == EXIT_BAD_URL
    assert "did you mean sqlite:///" in result.stderr and ":memory:" not in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- Failures: one line, an exit code each, never a password -------------------------------------

PASSWORD = "s3cret-pw"


def with_password(url, password=PASSWORD, query=""):
    scheme, rest = url.split("://", 1)
    user_part, host_part = rest.rsplit("@", 1) if "@" in rest else ("user", rest)
    if query and "?" in host_part:  # the URL has options already (?prefer_psycopg3=true): one more
        query = "&" + query.lstrip("?")
    return "%s://%s:%s@%s%s" % (scheme, user_part.split(":")[0], password, host_part, query)


def assert_one_clean_line(result, code):
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("peewee-sessions: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr and "s3cret" not in result.stderr


@pytest.mark.parametrize("url, code", [
    ("mysql://deploy:%s@127.0.0.1:abc/test" % PASSWORD, EXIT_BAD_URL),  # a bad port
    ("nosuch://deploy:%s@db.example/test" % PASSWORD, EXIT_BAD_URL),  # an unknown scheme
    ("postgres+pool://postgres:%s@127.0.0.1/test?max_connections=x" % PASSWORD, EXIT_BAD_URL),
    ("mysql://deploy:%s@127.0.0.1/test?password=%s&bogus=1" % (PASSWORD, PASSWORD), EXIT_BAD_URL),
])
def test_a_url_it_cannot_use_is_shown_without_its_password(url, code):
    result = run_module("--db", url, "stats")
    assert_one_clean_line(result, code)
    assert ":***@" in result.stderr


@pytest.mark.parametrize("backend, query", [
    ("mysql", "?charset=nope"), ("mysql", "?read_timeout=-1"), ("mysql", "?connect_timeout=0"),
    ("mysql", "?sslmode=require"), ("mysql", "?bogus=1"),
    ("postgresql", "?sslmode=nope"), ("postgresql", "?bogus_option=1"),
    ("postgresql", "?connect_timeout=abc"),
])
def test_an_option_the_driver_refuses_is_a_bad_url(backend, query):
    require_backend(backend)
    result = run_module("--db", with_password(server_url(backend), query=query), "stats")
    assert_one_clean_line(result, EXIT_BAD_URL)
    assert ":***@" in result.stderr


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
@pytest.mark.parametrize("wrong", ["user", "database"])
def test_a_refused_log_in_is_not_an_unreachable_server(backend, wrong):
    require_backend(backend)
    url = server_url(backend)
    if wrong == "user":
        url = url.replace("://postgres@", "://no_such_role@").replace("://root@", "://no_such_role@")
        assert "no_such_role" in url
    else:
        url = url.rsplit("/", 1)[0] + "/no_such_database_x"
    result = run_module("--db", url, "stats")
    assert_one_clean_line(result, EXIT_REFUSED)
    assert "refused the log-in" in result.stderr and "cannot reach" not in result.stderr


@pytest.mark.parametrize("backend", ["mysql"])  # PostgreSQL here trusts local log-ins, whatever the password
def test_a_wrong_password_is_a_refused_log_in_never_shown(backend):
    require_backend(backend)
    result = run_module("--db", with_password(server_url(backend)), "stats")
    assert_one_clean_line(result, EXIT_REFUSED)


def test_a_driver_s_several_lines_are_cut_to_the_first():
    # libpq adds "\n\tIs the server running on that host and accepting TCP/IP connections?"
    result = run_module("--db", with_password("postgresql://postgres@127.0.0.1:1/test"), "stats")
    assert_one_clean_line(result, EXIT_UNREACHABLE)
    assert "Is the server running" not in result.stderr


def test_the_epilog_documents_every_exit_code():
    result = run_module("--help")
    for words in ("3 bad database URL", "4 server unreachable", "5 table missing", "6 log-in refused"):
        assert words in " ".join(result.stdout.split())


def test_a_reader_that_goes_away_is_no_traceback():
    """`peewee-sessions sql | head -1`: the pipe closes before the output is written."""
    child = subprocess.Popen([sys.executable, "-m", "peewee_sessions", "sql", "--dialect", "mysql"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    child.stdout.close()  # before the child has imported anything
    _, err = child.communicate(timeout=60)
    assert child.returncode in (0, 1) and b"Traceback" not in err and b"BrokenPipe" not in err, err


def test_a_table_of_another_shape_is_a_database_error_in_one_line(cli, db, table_name):
    """MariaDB's "unknown column" (1054) is an OperationalError to PyMySQL: once reported as unreachable."""
    with db.connection_context():
        db.execute_sql("CREATE TABLE %s (sid varchar(255) PRIMARY KEY, other text)" % table_name)
    code, out, err = cli("stats")
    assert code == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert "expired" in err and "unavailable" not in err and "LINE 1" not in err


def test_create_table_in_a_missing_folder_names_the_folder(tmp_path):
    result = run_module("--db", "sqlite:///%s" % (tmp_path / "no_such_folder" / "x.db"), "create-table")
    assert_one_clean_line(result, EXIT_UNREACHABLE)
    assert "the folder %s does not exist" % (tmp_path / "no_such_folder") in result.stderr
