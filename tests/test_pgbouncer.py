"""PgBouncer in transaction pooling mode: what the PgBouncer runs of .ci/run rely on.

.ci/run runs every PostgreSQL test through a PgBouncer (tests/services.py) with psycopg2 and with
psycopg 3. These tests check that such a bouncer really hands a client's transactions to different
server connections, and that psycopg 3 needs prepare_threshold=None (given in the URL) there.
Without pgbouncer they skip (under CI=true they fail).
"""

import os
import shutil
import tempfile

import pytest
from playhouse.db_url import connect

from conftest import drop_table, require_backend, server_url, unavailable
from peewee_sessions import PeeweeSessionStore, SessionStoreError
from services import PGBOUNCER, PgBouncer, ServiceError

PSYCOPG3 = "prefer_psycopg3=true"
NO_PREPARE = "prefer_psycopg3=true&prepare_threshold=none"  # psycopg 3's default threshold is 5


@pytest.fixture(scope="module")
def bouncer():
    if not os.path.exists(PGBOUNCER):
        unavailable("%s is missing; to run these tests: apt-get install pgbouncer" % PGBOUNCER)
    require_backend("postgresql")
    # Not in pytest's tmp_path: pgbouncer runs as postgres when we are root, and can't reach into it.
    directory = tempfile.mkdtemp(prefix="peewee-sessions-pgbouncer-")
    bouncer = PgBouncer(directory, server_url("postgresql").split("?")[0])
    try:
        bouncer.start()
    except ServiceError as exc:
        pytest.fail("PgBouncer did not start (its files are in %s): %s" % (directory, exc))
    yield bouncer
    bouncer.stop()
    shutil.rmtree(directory, ignore_errors=True)


def with_query(url, query):
    return url + "?" + query if query else url


def needs_psycopg3(query):
    if query and PSYCOPG3 in query:
        try:
            import psycopg  # noqa: F401 (only: is it there?)
        except ImportError:
            unavailable("psycopg 3 is not installed (pip install 'psycopg[binary]')")


@pytest.fixture
def busy_pool(bouncer):
    """Makes PgBouncer open a few server connections, so that round robin has more than one to hand out."""
    import threading

    import psycopg2

    clients = [psycopg2.connect(bouncer.url) for _ in range(3)]
    inside, done = threading.Barrier(4), threading.Event()

    def hold(connection):
        with connection.cursor() as cursor:
            cursor.execute("BEGIN; SELECT 1")  # a transaction holds its server connection
            inside.wait(10)
            done.wait(10)
            cursor.execute("COMMIT")

    threads = [threading.Thread(target=hold, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    inside.wait(10)
    done.set()
    for thread in threads:
        thread.join(10)
    for client in clients:
        client.close()


@pytest.mark.parametrize("query", [None, NO_PREPARE], ids=["psycopg2", "psycopg3"])
def test_each_transaction_of_a_client_may_get_another_server_connection(bouncer, busy_pool, query):
    needs_psycopg3(query)
    db = connect(with_query(bouncer.url, query))
    with db.connection_context():
        backends = {db.execute_sql("SELECT pg_backend_pid()").fetchone()[0] for _ in range(6)}
    assert len(backends) > 1  # what a busy production bouncer does too


def test_psycopg3_takes_prepare_threshold_none_from_the_url_and_works_through_the_bouncer(
        bouncer, busy_pool, table_name):
    needs_psycopg3(NO_PREPARE)
    db = connect(with_query(bouncer.url, NO_PREPARE))
    store = PeeweeSessionStore(db, table_name=table_name, clear_interval=0)
    try:
        with store.connection():
            assert type(db.connection()).__module__.split(".")[0] == "psycopg"
            assert db.connection().prepare_threshold is None
            for n in range(20):  # four times psycopg 3's default threshold
                store.set("s", {"cookie": {"originalMaxAge": 60000}, "n": n})
                assert store.get("s")["n"] == n
    finally:
        store.close()
        drop_table(db, table_name)


def test_psycopg3_with_its_default_prepare_threshold_breaks_through_the_bouncer(
        bouncer, busy_pool, table_name):
    """Why the URL needs prepare_threshold=none: PgBouncer 1.18 keeps no prepared statements between
    transactions, and a client's next transaction may run on another server connection."""
    needs_psycopg3(PSYCOPG3)
    db = connect(with_query(bouncer.url, PSYCOPG3))
    store = PeeweeSessionStore(db, table_name=table_name, clear_interval=0)
    try:
        with pytest.raises(SessionStoreError, match="prepared statement"):
            with store.connection():
                for n in range(20):
                    store.set("s", {"cookie": {"originalMaxAge": 60000}, "n": n})
                    store.get("s")
    finally:
        store.close()
        drop_table(connect(with_query(bouncer.url, NO_PREPARE)), table_name)
