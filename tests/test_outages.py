"""Outages: the servers are stopped and started for real in the middle of a load run.

While the database is down, requests fail with SessionStoreUnavailable, which
SessionPlugin(error_status=503) answers as a 503; when it is back, requests succeed
again without restarting anything, every session saved before is still there,
no acknowledged write is lost, and the sweeper has lived through it. The servers
are always left running. They run under CI=true, and elsewhere only with
PEEWEE_SESSIONS_TEST_OUTAGES=1, since they interrupt the servers for everyone.
"""

import datetime
import os
import shutil
import subprocess
import threading
import time

import pytest
import webtest

from conftest import IN_CI, build_app, drop_table, open_database, open_pooled_database
from peewee_sessions import PeeweeSessionStore, SessionStoreUnavailable
from services import is_running  # a zombie (its parent has yet to reap it) counts as gone

CLIENTS = 4
START_TIMEOUT = 90


def run(*command):
    subprocess.run(command, check=True, capture_output=True, timeout=START_TIMEOUT)


def mariadb_pid_file():
    """The local MariaDB server's pid file, from the configuration it starts with.

    Other mariadbd processes may run the same executable (test_galera.py's cluster does), so the
    server is told apart by its pid file, never by the executable alone.
    """
    defaults = subprocess.run(["my_print_defaults", "--mysqld"], capture_output=True, text=True).stdout
    found = [line.split("=", 1)[1] for line in defaults.splitlines() if line.startswith("--pid-file=")]
    return found[-1] if found else "/run/mysqld/mysqld.pid"  # the last setting wins, as in mariadbd


def mariadb_pid():
    try:
        with open(mariadb_pid_file()) as pid_file:
            return int(pid_file.read().strip())
    except (OSError, ValueError):
        return None


def stop_mariadb():
    pid = mariadb_pid()
    run("mysqladmin", "--protocol=tcp", "-h", "127.0.0.1", "-u", "root", "shutdown")
    # mysqladmin may return while mariadbd is still exiting, and start --oknodo would then do nothing.
    deadline = time.monotonic() + START_TIMEOUT
    while pid is not None and is_running(pid):
        assert time.monotonic() < deadline, "mariadbd did not exit"
        time.sleep(0.2)


def start_mariadb():
    # --pidfile: --oknodo looks only at the process that file names, not at every mariadbd.
    run("start-stop-daemon", "--start", "--oknodo", "--background", "--pidfile", mariadb_pid_file(),
        "--exec", "/usr/sbin/mariadbd")


def postgres_version():
    return sorted(os.listdir("/etc/postgresql"))[0]


SERVERS = {
    "postgresql": {
        "stop": lambda: run("pg_ctlcluster", "--skip-systemctl-redirect", postgres_version(), "main", "stop",
                            "-m", "fast"),
        "start": lambda: run("pg_ctlcluster", "--skip-systemctl-redirect", postgres_version(), "main", "start"),
        "tools": ["pg_ctlcluster"],
    },
    "mysql": {
        "stop": stop_mariadb,
        "start": start_mariadb,
        "tools": ["mysqladmin", "my_print_defaults", "start-stop-daemon", "/usr/sbin/mariadbd"],
    },
}


def reachable(backend, tmp_path):
    db = open_database(backend, tmp_path)
    try:
        db.connect()
        db.close()
        return True
    except Exception:
        return False


@pytest.fixture
def server(backend, tmp_path):
    """Stop/start controls for the backend's local server; it is running again when the test ends."""
    if not IN_CI and os.environ.get("PEEWEE_SESSIONS_TEST_OUTAGES") != "1":
        pytest.skip("outage tests stop and start the local %s server: set PEEWEE_SESSIONS_TEST_OUTAGES=1 "
                    "to run them (CI always does)" % backend)
    missing = [tool for tool in SERVERS[backend]["tools"] if not shutil.which(tool)]
    if missing or os.geteuid() != 0:
        reason = "outage tests stop and start the local %s server: they need root and %s" % (
            backend, ", ".join(SERVERS[backend]["tools"]))
        if IN_CI:
            pytest.fail("CI=true: " + reason)
        pytest.skip(reason)
    open_database(backend, tmp_path)  # skips (or fails under CI) when the server is not there at all

    def start():
        SERVERS[backend]["start"]()
        deadline = time.monotonic() + START_TIMEOUT
        while not reachable(backend, tmp_path):
            assert time.monotonic() < deadline, "%s did not come back" % backend
            time.sleep(0.5)

    yield {"stop": SERVERS[backend]["stop"], "start": start}
    if not reachable(backend, tmp_path):
        start()


class LoadRun:
    """Client threads, each with its own session, calling /count until stopped; records every answer."""

    def __init__(self, app):
        self.stop = threading.Event()
        self.answers = [[] for _ in range(CLIENTS)]  # (time, status, body) per client
        self.clients = [webtest.TestApp(app) for _ in range(CLIENTS)]
        self.threads = [threading.Thread(target=self._loop, args=(i,)) for i in range(CLIENTS)]

    def _loop(self, index):
        client = self.clients[index]
        while not self.stop.is_set():
            response = client.get("/count", expect_errors=True)
            self.answers[index].append((time.monotonic(), response.status_int, response.text))
            time.sleep(0.01)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
@pytest.mark.parametrize("pooled", [False, True], ids=["connect-per-request", "pooled"])
def test_a_server_restart_in_the_middle_of_a_load_run(backend, pooled, server, tmp_path, table_name):
    if pooled:
        db = open_pooled_database(backend, tmp_path, max_connections=CLIENTS + 2, timeout=10)
    else:
        db = open_database(backend, tmp_path)
    sweep_errors = []
    store = PeeweeSessionStore(db, table_name=table_name, clear_interval=0.2, on_cleanup_error=sweep_errors.append)
    app, _ = build_app(store, error_status=503)
    try:
        with LoadRun(app) as load:
            time.sleep(1)
            server["stop"]()
            time.sleep(2)
            restarted = time.monotonic()
            server["start"]()
            recovered = time.monotonic()
            time.sleep(2)
        for client, answers in zip(load.clients, load.answers):
            statuses = [status for _, status, _ in answers]
            assert set(statuses) <= {200, 503}, statuses
            assert statuses[-1] == 200 and 200 in statuses[:3]
            # Sessions outlive the outage: each acknowledged counter is one more than the last
            # acknowledged one, or up to one more per 503 in between (a write whose commit reached
            # the server as it went down is stored, though its reply was lost): nothing lost or doubled.
            last, unanswered = 0, 0
            for _, status, body in answers:
                if status == 503:
                    unanswered += 1
                    continue
                assert last + 1 <= int(body) <= last + 1 + unanswered, (last, body, unanswered)
                last, unanswered = int(body), 0
            sid = client.cookies["connect.sid"].replace("%3A", ":").split(".")[0][2:]
            assert store.get(sid)["n"] == last
            assert all(status == 200 for t, status, _ in answers if t > recovered + 0.5)
        assert any(status == 503 for answers in load.answers for _, status, _ in answers)
        assert sweep_errors and all(isinstance(e, SessionStoreUnavailable) for e in sweep_errors)
        # The sweeper lived through it: it still deletes what expires.
        store.set("expired-after", {"cookie": {"expires": datetime.datetime.now(datetime.timezone.utc)
                                               - datetime.timedelta(seconds=1)}})
        deadline = time.monotonic() + 10
        while store.stats()["expired"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.stats()["expired"] == 0
        if pooled:
            assert not db._in_use  # no connection stuck checked out
        assert restarted < recovered
    finally:
        store.close()
        drop_table(db, table_name)
        if pooled:
            db.close_all()


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_without_error_status_the_error_is_the_librarys_own(backend, server, store):
    store.set("kept", {"cookie": {"originalMaxAge": 3600000}, "n": 1})
    store.db.close()
    server["stop"]()
    try:
        with pytest.raises(SessionStoreUnavailable):
            store.get("kept")
        app, _ = build_app(store)
        assert webtest.TestApp(app).get("/count", headers={"Cookie": "connect.sid=x"},
                                        expect_errors=True).status_int == 500
    finally:
        server["start"]()
    assert store.get("kept")["n"] == 1
