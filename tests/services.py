"""Throw-away database services on loopback for the scale-out tests: PgBouncer and a Galera cluster.

Each one lives in a directory of its own (configuration, data, logs, pid files), listens on free
127.0.0.1 ports and is stopped by the pid it started: the machine's own PostgreSQL (5432) and
MariaDB (3306) are never touched. Used by the test fixtures and, for PgBouncer, by .ci/run:

    python tests/services.py pgbouncer start DIR   # prints the URL of PgBouncer in front of PostgreSQL
    python tests/services.py pgbouncer stop DIR
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

PGBOUNCER = "/usr/sbin/pgbouncer"
MARIADBD = "/usr/sbin/mariadbd"
GALERA_PROVIDER = "/usr/lib/galera/libgalera_smm.so"
INSTALL_DB = "mariadb-install-db"


class ServiceError(Exception):
    """A service did not start or stop; the message holds the end of its log."""


def free_ports(count):
    """`count` different TCP ports free on 127.0.0.1 right now (the services bind them a moment later)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:  # all bound at once, so no port comes out twice
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def poll(what, check, timeout, log=None):
    """Call check() until it returns something true, at most `timeout` seconds; return that."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise ServiceError("timed out after %ss waiting for %s%s" % (timeout, what, tail(log)))
        time.sleep(0.1)


def tail(path, size=3000):
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as log:
        return "\n--- end of %s ---\n%s" % (path, log.read()[-size:])


def is_running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    # A zombie (a child not reaped yet) has exited too.
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_pid(pid, timeout=30, sig=signal.SIGTERM):
    """Signal a process and wait until it is gone (SIGKILL after `timeout` seconds)."""
    if not is_running(pid):
        return
    os.kill(pid, sig)
    try:
        poll("process %d to exit" % pid, lambda: not is_running(pid), timeout)
    except ServiceError:
        os.kill(pid, signal.SIGKILL)
        poll("process %d to die" % pid, lambda: not is_running(pid), 10)


def service_user(name):
    """(uid, gid, name) to run a server as: `name` when we are root (servers refuse root), else ourselves."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid, name
    return os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name


def own_directory(path, uid, gid):
    """Make `path` the service user's (the directories above it must let that user through, as /tmp does)."""
    os.makedirs(path, exist_ok=True)
    os.chown(path, uid, gid)


# -- PgBouncer -----------------------------------------------------------------------------------


class PgBouncer:
    """PgBouncer in transaction pooling mode in front of a PostgreSQL server, daemonized.

    server_round_robin hands each transaction the server connection idle the longest, so a client's
    consecutive transactions land on different server connections, as on a busy production
    bouncer: anything that leans on session state (a prepared statement, a SET) shows at once.
    """

    def __init__(self, directory, upstream="postgresql://postgres@127.0.0.1:5432/test", pool_size=20):
        self.directory = os.path.abspath(directory)
        self.upstream = urllib.parse.urlsplit(upstream)
        self.pool_size = pool_size
        self.ini = os.path.join(self.directory, "pgbouncer.ini")
        self.log = os.path.join(self.directory, "pgbouncer.log")
        self.pidfile = os.path.join(self.directory, "pgbouncer.pid")
        self.port = None

    @property
    def url(self):
        user = self.upstream.username or "postgres"
        return "postgresql://%s@127.0.0.1:%d%s" % (user, self.port, self.upstream.path or "/test")

    def start(self):
        if not os.path.exists(PGBOUNCER):
            raise ServiceError("%s is missing: apt-get install pgbouncer" % PGBOUNCER)
        uid, gid, user = service_user("postgres")
        own_directory(self.directory, uid, gid)
        self.port, = free_ports(1)
        client_user = self.upstream.username or "postgres"
        with open(os.path.join(self.directory, "userlist.txt"), "w") as users:
            users.write('"%s" ""\n' % client_user)  # trust still wants the user listed
        with open(self.ini, "w") as ini:
            ini.write(PGBOUNCER_INI.format(
                host=self.upstream.hostname or "127.0.0.1", port=self.upstream.port or 5432,
                listen_port=self.port, directory=self.directory, pool_size=self.pool_size))
        command = [PGBOUNCER, "-d", "-q", self.ini]
        if os.geteuid() == 0:
            command[1:1] = ["-u", user]  # pgbouncer refuses to run as root
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if result.returncode:
            raise ServiceError("pgbouncer did not start: %s%s" % (result.stderr, tail(self.log)))
        poll("pgbouncer to answer on port %d" % self.port, self._answers, 15, self.log)
        return self

    def _answers(self):
        import psycopg2

        try:
            psycopg2.connect(self.url, connect_timeout=2).close()
            return True
        except psycopg2.OperationalError:
            return False

    def pid(self):
        try:
            with open(self.pidfile) as pidfile:
                return int(pidfile.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, timeout=10)  # SIGTERM: pgbouncer's immediate shutdown


PGBOUNCER_INI = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
; no Unix socket: it would take /var/run/postgresql/.s.PGSQL.<port>
unix_socket_dir =
auth_type = trust
auth_file = {directory}/userlist.txt
pool_mode = transaction
server_round_robin = 1
default_pool_size = {pool_size}
max_client_conn = 500
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""


# -- A MariaDB Galera cluster --------------------------------------------------------------------


class GaleraNode:
    """One mariadbd of the cluster: its directory, its four ports, and the process while it runs."""

    def __init__(self, cluster, index, ports):
        self.cluster = cluster
        self.index = index
        self.name = "node%d" % index
        self.directory = os.path.join(cluster.directory, self.name)
        self.datadir = os.path.join(self.directory, "data")
        self.cnf = os.path.join(self.directory, "my.cnf")
        self.log = os.path.join(self.directory, "error.log")
        self.port = ports[0]
        self.gcomm_port = ports[1]  # group communication
        self.ist_port = ports[2]  # incremental state transfer (a node that was away rejoins)
        self.sst_port = ports[3]  # full state transfer (rsync) to a new node
        self.process = None

    @property
    def url(self):
        return "mysql://root@127.0.0.1:%d/%s" % (self.port, self.cluster.database)

    def write_config(self, uid, gid):
        own_directory(self.directory, uid, gid)
        own_directory(self.datadir, uid, gid)
        peers = ",".join("127.0.0.1:%d" % node.gcomm_port for node in self.cluster.nodes)
        provider_options = ";".join([  # every port its own: by default all three would want 4567 and 4568
            "gmcast.listen_addr=tcp://127.0.0.1:%d" % self.gcomm_port,
            "ist.recv_addr=127.0.0.1:%d" % self.ist_port,
            "gcache.size=64M",
        ])
        with open(self.cnf, "w") as cnf:
            cnf.write(GALERA_CNF.format(node=self, peers=peers, user=self.cluster.user,
                                        provider=GALERA_PROVIDER, provider_options=provider_options,
                                        cluster=self.cluster.name))

    def start(self, bootstrap=False):
        """Start mariadbd; return at once (see wait_synced)."""
        assert self.process is None or self.process.poll() is not None, "%s is running" % self.name
        command = [MARIADBD, "--defaults-file=" + self.cnf]  # this file only: not /etc/mysql/my.cnf
        if bootstrap:
            command.append("--wsrep-new-cluster")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True)  # a Ctrl-C in pytest is not its

    def status(self):
        """{wsrep status variable: value}, or None while the node does not answer."""
        import pymysql

        try:
            connection = pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=2)
        except pymysql.err.MySQLError:
            return None
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW STATUS LIKE 'wsrep%%'")
                return dict(cursor.fetchall())
        except pymysql.err.MySQLError:
            return None
        finally:
            connection.close()

    def is_synced(self):
        status = self.status()
        return bool(status and status.get("wsrep_ready") == "ON"
                    and status.get("wsrep_local_state_comment") == "Synced"
                    and int(status.get("wsrep_cluster_size", 0)) == self.cluster.running())

    def wait_synced(self, timeout=90):
        def synced():
            if self.process.poll() is not None:
                raise ServiceError("%s exited with %s%s" % (self.name, self.process.returncode,
                                                               tail(self.log)))
            return self.is_synced()

        poll("%s to join the cluster" % self.name, synced, timeout, self.log)

    def stop(self, timeout=60):
        """A clean shutdown (SIGTERM): the node leaves the cluster and can rejoin by IST."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def is_running(self):
        return self.process is not None and self.process.poll() is None


class GaleraCluster:
    """A MariaDB Galera cluster of `size` nodes, each a mariadbd with its own datadir and ports.

    The first node bootstraps a new cluster from a fresh datadir; the others join it by a full
    state transfer (rsync). wsrep_sync_wait = 1 in every node's configuration: a read waits until
    the node has applied every write committed anywhere in the cluster before it started, so a
    session saved through one node is there when the next request reads it through another.
    """

    def __init__(self, directory, size=3, database="test", name="peewee_sessions_test"):
        self.directory = os.path.abspath(directory)
        self.database = database
        self.name = name
        ports = free_ports(4 * size)
        self.nodes = [GaleraNode(self, index, ports[4 * index:4 * index + 4]) for index in range(size)]
        self.user = None

    def running(self):
        return sum(node.is_running() for node in self.nodes)

    def start(self, timeout=120):
        for tool in (MARIADBD, GALERA_PROVIDER):
            if not os.path.exists(tool):
                raise ServiceError("%s is missing: apt-get install galera-4 mariadb-server rsync" % tool)
        for tool in (INSTALL_DB, "rsync"):
            if not shutil.which(tool):
                raise ServiceError("%s is missing: apt-get install galera-4 mariadb-server rsync" % tool)
        uid, gid, self.user = service_user("mysql")
        own_directory(self.directory, uid, gid)
        for node in self.nodes:
            node.write_config(uid, gid)
        first = self.nodes[0]
        self._install(first)
        try:
            first.start(bootstrap=True)
            first.wait_synced(timeout)
            self._prepare(first)
            for node in self.nodes[1:]:  # one joiner at a time: one donor, less load on 2 cores
                node.start()
                node.wait_synced(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _install(self, node):
        command = [INSTALL_DB, "--no-defaults", "--datadir=" + node.datadir, "--user=" + self.user,
                   "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise ServiceError("%s failed:\n%s" % (INSTALL_DB, (result.stdout + result.stderr)[-3000:]))

    def _prepare(self, node):
        """Root over TCP from 127.0.0.1 (install-db made root@localhost only) and the test database."""
        import pymysql

        connection = pymysql.connect(unix_socket=os.path.join(node.directory, "mysqld.sock"), user="root")
        try:
            with connection.cursor() as cursor:
                for statement in (
                    "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'",
                    "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION",
                    "CREATE DATABASE IF NOT EXISTS `%s`" % self.database,
                ):
                    cursor.execute(statement)
        finally:
            connection.close()

    def stop(self):
        # The last node to leave records itself as safe to bootstrap from; the order doesn't matter here.
        for node in reversed(self.nodes):
            node.stop()


GALERA_CNF = """\
[mysqld]
user = {user}
datadir = {node.datadir}
socket = {node.directory}/mysqld.sock
pid-file = {node.directory}/mysqld.pid
# No log-error: the log goes to stderr, which GaleraNode.start sends to node.log
bind-address = 127.0.0.1
port = {node.port}
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
# Galera's requirements
binlog_format = ROW
default_storage_engine = InnoDB
innodb_autoinc_lock_mode = 2
# Small: three of these share a 2-core test machine with the other servers
innodb_buffer_pool_size = 64M
innodb_log_file_size = 32M
performance_schema = OFF
max_connections = 200

wsrep_on = ON
wsrep_provider = {provider}
wsrep_cluster_name = {cluster}
wsrep_cluster_address = gcomm://{peers}
wsrep_node_name = {node.name}
wsrep_node_address = 127.0.0.1:{node.gcomm_port}
wsrep_provider_options = "{provider_options}"
wsrep_sst_method = rsync
wsrep_sst_receive_address = 127.0.0.1:{node.sst_port}
# Causal reads: a SELECT first waits for the writes committed elsewhere in the cluster (see the docstring)
wsrep_sync_wait = 1
"""


def main(argv):
    if len(argv) != 3 or argv[0] != "pgbouncer" or argv[1] not in ("start", "stop"):
        sys.exit("usage: python tests/services.py pgbouncer start|stop DIR  (PostgreSQL from "
                 "PEEWEE_SESSIONS_TEST_POSTGRES, default postgresql://postgres@127.0.0.1:5432/test)")
    upstream = os.environ.get("PEEWEE_SESSIONS_TEST_POSTGRES") or "postgresql://postgres@127.0.0.1:5432/test"
    bouncer = PgBouncer(argv[2], upstream)
    if argv[1] == "start":
        print(bouncer.start().url)
    else:
        bouncer.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
