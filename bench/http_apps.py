"""The WSGI apps that bench/http_bench.py serves with gunicorn: the same two routes on each app.

    /incr   reads and writes the session: a counter, returned as the response body
    /hello  does not use the session: returns "hello"

Apps (HB_APP):
    plugin      Bottle + peewee_sessions.SessionPlugin; the app's database is a playhouse.pool pool, as the
                README recommends (SQLite: the file in WAL mode); the store keeps a connection per thread
    middleware  a bare WSGI app inside peewee_sessions.SessionMiddleware, on the same database
    flaskiface  Flask with peewee_sessions.FlaskSessionInterface, on the same database
    floorheld   the floor: Bottle, /incr hand-written with the plugin's own statements on a connection each
                thread opens once and keeps, and the same signed cookie: the least a session store can cost
    beaker      Bottle inside beaker.middleware.SessionMiddleware, session.type = "ext:database"
    flask       Flask + Flask-Session, SESSION_TYPE = "sqlalchemy" (Flask-SQLAlchemy)
(The Express app, bench/express_app.js, is Node's.)

Configured by the environment, so `gunicorn --chdir bench http_apps:app` builds it in the worker:
    HB_APP, HB_DB_URL (postgresql://..., mysql://..., sqlite:////abs/path.db), HB_TABLE, HB_SECRET, HB_POOL.
"""

import datetime
import json
import os
import secrets
import sys
import urllib.parse

import peewee

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # this checkout's peewee_sessions, not an installed one

SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "normal"}  # what the store's default SQLite uses
SQLITE_BUSY_TIMEOUT_S = 10


def _parts(url):
    parsed = urllib.parse.urlsplit(url)
    return {
        "scheme": parsed.scheme.split("+")[0],
        "host": parsed.hostname or "127.0.0.1",
        "port": parsed.port,
        "user": urllib.parse.unquote(parsed.username or ""),
        "password": urllib.parse.unquote(parsed.password or ""),
        "database": parsed.path.lstrip("/") if not parsed.scheme.startswith("sqlite") else parsed.path,
    }


def backend_of(url):
    scheme = _parts(url)["scheme"]
    return {"postgres": "postgresql", "postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql",
            "sqlite": "sqlite"}[scheme]


def sqlalchemy_url(url):
    """The SQLAlchemy URL of the same database (psycopg2 / PyMySQL / pysqlite)."""
    p, backend = _parts(url), backend_of(url)
    if backend == "sqlite":
        return "sqlite:///" + p["database"]
    driver = "postgresql+psycopg2" if backend == "postgresql" else "mysql+pymysql"
    auth = urllib.parse.quote(p["user"], safe="")
    if p["password"]:
        auth += ":" + urllib.parse.quote(p["password"], safe="")
    port = ":%d" % p["port"] if p["port"] else ""
    return "%s://%s@%s%s/%s" % (driver, auth, p["host"], port, p["database"])


def peewee_database(url, pool_size=8):
    """Every database through a playhouse.pool pool, as the README recommends (SQLite: the file in WAL mode)."""
    from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase, PooledSqliteDatabase

    p, backend = _parts(url), backend_of(url)
    if backend == "sqlite":
        return PooledSqliteDatabase(p["database"], pragmas=SQLITE_PRAGMAS, timeout=SQLITE_BUSY_TIMEOUT_S,
                                    check_same_thread=False, max_connections=pool_size)
    kwargs = {"host": p["host"], "user": p["user"], "max_connections": pool_size, "stale_timeout": 300,
              "timeout": 10}
    if p["port"]:
        kwargs["port"] = p["port"]
    if backend == "postgresql":
        if p["password"]:
            kwargs["password"] = p["password"]
        return PooledPostgresqlDatabase(p["database"], **kwargs)
    return PooledMySQLDatabase(p["database"], password=p["password"], charset="utf8mb4", **kwargs)


def held_peewee_database(url):
    """The same database without a pool: each thread's connection, opened on first use and kept."""
    from playhouse.db_url import connect

    if backend_of(url) == "sqlite":
        return peewee.SqliteDatabase(_parts(url)["database"], pragmas=SQLITE_PRAGMAS, timeout=SQLITE_BUSY_TIMEOUT_S)
    return connect(url, **({"charset": "utf8mb4"} if backend_of(url) == "mysql" else {}))


def _sqlite_pragmas_for_sqlalchemy():
    """Give SQLAlchemy's SQLite connections the pragmas and busy timeout the plugin's database has."""
    import sqlalchemy

    @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
    def _pragmas(dbapi_connection, record):
        if type(dbapi_connection).__module__.startswith("sqlite3"):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout = %d" % (SQLITE_BUSY_TIMEOUT_S * 1000))
            for name, value in SQLITE_PRAGMAS.items():
                cursor.execute("PRAGMA %s = %s" % (name, value))
            cursor.close()


# -- The apps ---------------------------------------------------------------------------------


def bottle_app(db_url, table, secret="bench secret", pool_size=8):
    """Bottle with the plugin."""
    import bottle
    from peewee_sessions import SessionPlugin

    app = bottle.Bottle()
    app.install(SessionPlugin(peewee_database(db_url, pool_size), secret=secret, table_name=table))

    @app.get("/incr")
    def incr(session):
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/hello")
    def hello():
        return "hello"

    return app


def middleware_app(db_url, table, secret="bench secret", pool_size=8):
    """A bare WSGI app inside SessionMiddleware."""
    from peewee_sessions import SessionMiddleware

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/incr":
            session = environ["peewee_sessions.session"]
            session["n"] = session.get("n", 0) + 1
            body = str(session["n"]).encode()
        else:
            body = b"hello"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return SessionMiddleware(app, peewee_database(db_url, pool_size), secret=secret, table_name=table)


def flask_interface_app(db_url, table, secret="bench secret", pool_size=8):
    """Flask with FlaskSessionInterface (a day's lifetime, as the other apps' cookies)."""
    from flask import Flask, session
    from peewee_sessions import FlaskSessionInterface

    app = Flask("http_bench_flask_interface")
    app.config.update(SECRET_KEY=secret, PERMANENT_SESSION_LIFETIME=datetime.timedelta(seconds=86400))
    app.session_interface = FlaskSessionInterface(peewee_database(db_url, pool_size), table_name=table)

    @app.get("/incr")
    def incr():
        session.permanent = True
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/hello")
    def hello():
        return "hello"

    return app


def floor_app(db_url, table, secret="bench secret"):
    """The floor: what the plugin does for /incr, written by hand on the raw cursor, nothing more.

    The same statements (the store's: read, compare-and-set update, insert for a new session), the
    same signed connect.sid cookie and session JSON, on a connection each thread opens once and keeps.
    No lazy loading, change detection, cookie options, error handling, reconnection or cache headers:
    what the plugin costs beyond this is the price of those.
    """
    import bottle
    from peewee_sessions import PeeweeSessionStore

    db = held_peewee_database(db_url)
    sql = PeeweeSessionStore(db, table_name=table, clear_interval=0).dialect  # also creates the table
    app = bottle.Bottle()

    @app.get("/incr")
    def incr():
        n, set_cookie = floor_incr(db, sql, bottle.request.get_cookie("connect.sid") or "", secret)
        bottle.response.set_header("Set-Cookie", set_cookie)
        return str(n)

    @app.get("/hello")
    def hello():
        return "hello"

    return app


def floor_incr(db, sql, cookie_value, secret):
    """The floor's /incr on a peewee database and a store's dialect (its SQL), given the connect.sid cookie
    as the browser sent it (URL-encoded): (the new counter, the Set-Cookie header's value).

    Also what bench/engine_instructions.py counts as the floor, without a web framework.
    """
    from peewee_sessions import _http_date, _iso_z, sign_session_id, unsign_session_id

    sid = unsign_session_id(urllib.parse.unquote(cookie_value), [secret])
    now = datetime.datetime.now(datetime.timezone.utc)
    expires = now + datetime.timedelta(days=1)
    if db.is_closed():
        db.connect()
    cursor = db.connection().cursor()
    row = None
    if sid:
        cursor.execute(sql.get, (sid, sql.db_time(now)))
        row = cursor.fetchone()
    n = (json.loads(row[0])["n"] if row else 0) + 1
    cookie = {"originalMaxAge": 86400000, "expires": _iso_z(expires), "httpOnly": True, "path": "/",
              "sameSite": "lax"}
    text = json.dumps({"cookie": cookie, "n": n}, separators=(",", ":"))
    if row:
        cursor.execute(sql.replace_if_unchanged, (text, sql.db_time(expires), sid, sql.db_time(now), row[0]))
    else:
        sid = secrets.token_urlsafe(24)
        cursor.execute(sql.set, sql.set_params(sid, text, sql.db_time(expires)))
    signed = urllib.parse.quote(sign_session_id(sid, secret), safe="")
    return n, "connect.sid=%s; Path=/; Expires=%s; HttpOnly; SameSite=Lax" % (signed, _http_date(expires))


def beaker_app(db_url, table, secret="bench secret"):
    """Bottle inside Beaker's SessionMiddleware, sessions in the same database through SQLAlchemy."""
    import bottle
    from beaker.middleware import SessionMiddleware

    if backend_of(db_url) == "sqlite":
        _sqlite_pragmas_for_sqlalchemy()
    app = bottle.Bottle()

    @app.get("/incr")
    def incr():
        session = bottle.request.environ["beaker.session"]
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])  # session.auto: Beaker saves it after the callback

    @app.get("/hello")
    def hello():
        return "hello"

    options = {
        "session.type": "ext:database",
        "session.url": sqlalchemy_url(db_url),
        "session.table_name": table,
        "session.auto": True,
        "session.key": "beaker.session.id",
        "session.secret": secret,  # a signed session-id cookie, like the plugin's
        "session.timeout": 86400,  # the plugin's max_age
        "session.httponly": True,
        "session.samesite": "Lax",
    }
    return SessionMiddleware(app, options)


def flask_app(db_url, table, secret="bench secret"):
    """Flask with Flask-Session's SQLAlchemy backend on the same database."""
    import datetime

    from flask import Flask, session
    from flask_session import Session
    from flask_sqlalchemy import SQLAlchemy

    if backend_of(db_url) == "sqlite":
        _sqlite_pragmas_for_sqlalchemy()
    app = Flask("http_bench_flask")
    app.config.update(
        SECRET_KEY=secret,
        SQLALCHEMY_DATABASE_URI=sqlalchemy_url(db_url),
        SESSION_TYPE="sqlalchemy",
        SESSION_SQLALCHEMY_TABLE=table,
        PERMANENT_SESSION_LIFETIME=datetime.timedelta(seconds=86400),  # the plugin's max_age
    )
    db = SQLAlchemy(app)
    app.config["SESSION_SQLALCHEMY"] = db
    Session(app)

    @app.get("/incr")
    def incr():
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/hello")
    def hello():
        return "hello"

    return app


def app_from_environment():
    kind = os.environ["HB_APP"]
    url, table = os.environ.get("HB_DB_URL"), os.environ.get("HB_TABLE")
    secret = os.environ.get("HB_SECRET", "bench secret")
    pool_size = int(os.environ.get("HB_POOL", "8"))
    makers = {
        "plugin": lambda: bottle_app(url, table, secret, pool_size),
        "middleware": lambda: middleware_app(url, table, secret, pool_size),
        "flaskiface": lambda: flask_interface_app(url, table, secret, pool_size),
        "floorheld": lambda: floor_app(url, table, secret),
        "beaker": lambda: beaker_app(url, table, secret),
        "flask": lambda: flask_app(url, table, secret),
    }
    if kind not in makers:
        raise ValueError("HB_APP must be one of %s, not %r" % (", ".join(makers), kind))
    return makers[kind]()


_app = None


def __getattr__(name):
    """`http_apps:app` for gunicorn: built on first access, in the worker, from the environment."""
    global _app
    if name == "app":
        if _app is None:
            _app = app_from_environment()
        return _app
    raise AttributeError(name)
