"""Shared fixtures: a database and a store per backend (SQLite file, PostgreSQL, MariaDB/MySQL).

The servers are found through environment variables (defaults: a local server):
    PEEWEE_SESSIONS_TEST_POSTGRES  postgresql://postgres@127.0.0.1:5432/test
    PEEWEE_SESSIONS_TEST_MYSQL     mysql://root@127.0.0.1:3306/test
An unreachable server's tests are skipped, saying which variable to set; under CI=true they fail.
"""

import functools
import os
import uuid

import peewee
import pytest
from playhouse.db_url import connect

from peewee_sessions import PeeweeSessionStore

SERVER_URLS = {
    "postgresql": ("PEEWEE_SESSIONS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": ("PEEWEE_SESSIONS_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test"),
}
BACKENDS = ["sqlite", "postgresql", "mysql"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def server_url(backend):
    variable, default = SERVER_URLS[backend]
    return os.environ.get(variable) or default


@functools.lru_cache(maxsize=None)
def unreachable_reason(backend):
    """None when the backend's server answers, else why not."""
    if backend == "sqlite":
        return None
    try:
        db = connect(server_url(backend))
        db.connect()
        db.close()
    except Exception as exc:  # any driver or network error means "not here"
        variable = SERVER_URLS[backend][0]
        return "%s at %s is unreachable (%s); set %s to a database URL to run these tests" % (
            backend, server_url(backend), exc, variable)
    return None


def unavailable(reason):
    """Skip, saying how to enable the test; under CI=true nothing may be skipped, so fail."""
    if IN_CI:
        pytest.fail("CI=true: no test may be skipped. " + reason)
    pytest.skip(reason)


def require_backend(backend):
    reason = unreachable_reason(backend)
    if reason:
        unavailable(reason)


def database_url(backend, tmp_path):
    if backend == "sqlite":
        return "sqlite:///%s" % (tmp_path / "sessions.sqlite")
    return server_url(backend)


def open_database(backend, tmp_path, **kwargs):
    """A new, unconnected peewee database for the backend (SQLite: a file in tmp_path)."""
    require_backend(backend)
    if backend == "sqlite":
        return peewee.SqliteDatabase(str(tmp_path / "sessions.sqlite"), pragmas={"journal_mode": "wal"}, **kwargs)
    return connect(server_url(backend), **kwargs)


def open_pooled_database(backend, tmp_path, **kwargs):
    """open_database's database through a playhouse.pool pool: the same server, settings and driver."""
    from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase, PooledSqliteDatabase

    plain = open_database(backend, tmp_path)
    pool_class = {"sqlite": PooledSqliteDatabase, "postgresql": PooledPostgresqlDatabase,
                  "mysql": PooledMySQLDatabase}[backend]
    if type(getattr(plain, "_adapter", None)).__name__ == "Psycopg3Adapter":
        kwargs["prefer_psycopg3"] = True  # the URL asked for it; peewee keeps it out of connect_params
    return pool_class(plain.database, **dict(plain.connect_params, **kwargs))


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def db(backend, tmp_path):
    database = open_database(backend, tmp_path)
    yield database
    if not database.is_closed():
        database.close()


GENERATED_TABLES = set()  # every name table_name gave out in this run: only these are checked for leftovers


@pytest.fixture
def table_name():
    """A table of the test's own, so tests never see each other's rows."""
    name = "t_" + uuid.uuid4().hex[:12]
    GENERATED_TABLES.add(name)
    return name


LIST_TABLES = {
    "postgresql": "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                  " AND tablename LIKE %s",
    "mysql": "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
             " AND table_name LIKE %s",
}


def leftover_tables(backend):
    """This run's tables (a generated name, or one with a suffix) still in the backend's server."""
    db = connect(server_url(backend))
    with db.connection_context():
        names = [row[0] for row in db.execute_sql(LIST_TABLES[backend], (r"t\_%",)).fetchall()]
    # Other developers run tests on the same servers at the same time: only this run's names count.
    return sorted(name for name in names if name[:14] in GENERATED_TABLES)


@pytest.fixture(scope="session", autouse=True)
def no_tables_left_behind():
    """Fails the run (an error at teardown) if a test left a table it made on PostgreSQL or MariaDB."""
    yield
    if not GENERATED_TABLES:
        return
    left = {backend: leftover_tables(backend)
            for backend in SERVER_URLS if unreachable_reason(backend) is None}
    left = {backend: names for backend, names in left.items() if names}
    assert not left, "tests left these tables behind: %s" % left


def drop_table(database, name):
    quote = database.quote
    with database.connection_context():
        database.execute_sql("DROP TABLE IF EXISTS %s%s%s" % (quote[0], name, quote[1]))


@pytest.fixture
def make_store(db, table_name):
    """Makes stores on the test's database; closes them and drops their tables afterwards."""
    made = []

    def make(**options):
        options.setdefault("table_name", table_name)
        options.setdefault("clear_interval", 0)
        store = PeeweeSessionStore(db, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
    for name in {store.table_name for store in made}:
        drop_table(db, name)


@pytest.fixture
def store(make_store):
    return make_store()


# -- Bottle apps with the plugin, driven through WebTest (a real WSGI stack) -------------------

SECRET = "test secret"


def build_app(store, **plugin_options):
    """A Bottle app whose routes are defined inside this factory (closures, as real apps do)."""
    import bottle

    from peewee_sessions import SessionPlugin

    app = bottle.Bottle()
    plugin = app.install(SessionPlugin(store, secret=plugin_options.pop("secret", SECRET), **plugin_options))

    @app.get("/count")
    def count(session):
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/read")
    def read(session):
        return str(session.get("n"))

    @app.get("/plain")
    def plain():
        return "no session here"

    @app.get("/unused")
    def unused(session):
        return "never looked"

    return app, plugin


class Counter:
    """Counts the SQL statements a database runs, by wrapping its one funnel, execute_sql.

    Given a store, it counts what the store runs on the app's database and on its own
    connections (PeeweeSessionStore._run) alike.
    """

    def __init__(self, db):
        self.statements = []
        databases = [db.db, db._own_db] if isinstance(db, PeeweeSessionStore) else [db]
        for database in filter(None, databases):
            self._wrap(database)

    def _wrap(self, db):
        original = db.execute_sql

        def counting(sql, params=None, *args, **kwargs):
            self.statements.append(sql)
            return original(sql, params, *args, **kwargs)

        db.execute_sql = counting

    def __len__(self):
        return len(self.statements)

    def reset(self):
        self.statements.clear()


@pytest.fixture
def web(store):
    """(TestApp, plugin, store) for the standard app on the test's backend."""
    import webtest

    app, plugin = build_app(store)
    return webtest.TestApp(app), plugin, store


@pytest.fixture
def make_web(store):
    import webtest

    def make(**plugin_options):
        app, plugin = build_app(store, **plugin_options)
        return webtest.TestApp(app), plugin, app

    return make
