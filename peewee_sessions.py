"""Server-side HTTP sessions kept in your own SQL database, through Peewee.

peewee-sessions is the Python counterpart of Node's express-session with
connect-session-knex: the same table, the same signed cookie and the same
session JSON, on SQLite, PostgreSQL and MySQL/MariaDB. A Bottle app and an
Express app can share one table and one log-in.

The store on its own::

    from peewee import PostgresqlDatabase
    from peewee_sessions import PeeweeSessionStore

    store = PeeweeSessionStore(PostgresqlDatabase("app", host="127.0.0.1"))
    store.set("some-id", {"cookie": {"originalMaxAge": 86400000}, "user": "alice"})
    store.get("some-id")        # -> {"cookie": {...}, "user": "alice"}

With Bottle::

    import bottle
    from peewee_sessions import SessionPlugin

    app = bottle.Bottle()
    app.install(SessionPlugin(db, secret="a long random string"))

    @app.get("/")
    def index(session):
        session["views"] = session.get("views", 0) + 1
        return f"{session['views']} views"

The module needs only the standard library and peewee; bottle is imported by
the plugin when it is installed.
"""

import argparse
import atexit
import contextlib
import copy
import datetime
import functools
import hashlib
import hmac
import http
import inspect
import json
import logging
import operator
import os
import random
import re
import secrets
import sys
import threading
import time
import urllib.parse
import weakref
from base64 import b64encode
from collections.abc import Iterable, Iterator
from typing import (
    Any,
    Callable,
    NamedTuple,
    Optional,
    Union,
    cast,
)

import peewee
from playhouse.pool import MaxConnectionsExceeded, PooledDatabase, PooledSqliteDatabase  # part of peewee

__version__ = "0.1.0"
__all__ = [
    "FlaskSessionInterface",
    "PeeweeSessionStore",
    "Session",
    "SessionConflict",
    "SessionCookie",
    "SessionEngine",
    "SessionMiddleware",
    "SessionOptions",
    "SessionPlugin",
    "SessionStoreError",
    "SessionStoreUnavailable",
    "StoredSession",
    "TableMissingError",
    "UserKeyError",
    "build_session_model",
    "create_table_sql",
    "main",
    "sign_session_id",
    "unsign_session_id",
]

logger = logging.getLogger(__name__)

UTC = datetime.timezone.utc
ONE_DAY = datetime.timedelta(days=1)
DEFAULT_SQLITE_FILE = "peewee_sessions.sqlite"
MAX_SID_LENGTH = 255  # the sid column is varchar(255)


class SessionStoreError(Exception):
    """Base class of this library's errors about the session table."""


class SessionStoreUnavailable(SessionStoreError):
    """The database could not be reached or the connection broke: worth a 503 and a retry."""


class SessionConflict(SessionStoreError):
    """Another transaction won a conflict over the same rows (a deadlock, a serialization failure, a
    Galera certification failure, a lock wait timeout) and this one changed nothing.

    The store retries what it can re-run itself; a locked() block it cannot re-run raises this,
    and Session.run_locked() re-runs the block on it.
    """


class TableMissingError(SessionStoreError):
    """The session table does not exist and the store may not create it."""


class UserKeyError(SessionStoreError):
    """A store without user_key asked for a user's sessions, or the table's user index is on another key."""


def _translated(exc: BaseException) -> BaseException:
    """This library's exception for a peewee one (other exceptions pass through)."""
    if isinstance(exc, (peewee.OperationalError, peewee.InterfaceError)):
        kind = _failure_kind(exc)
        if kind == "conflict":
            return SessionConflict(
                "the session database reported a conflict; nothing was changed: %s" % _first_line(exc)
            )
        if kind == "outage":
            return SessionStoreUnavailable("the session database is unavailable: %s" % _first_line(exc))
        if kind == "login":
            return SessionStoreError("the session database refused the log-in: %s" % _first_line(exc))
    if isinstance(exc, peewee.DatabaseError):
        return SessionStoreError("the session database failed: %s" % _first_line(exc))
    return exc


def _first_line(exc: Union[BaseException, str]) -> str:
    """A driver's message without the lines PostgreSQL adds (LINE 1 quotes the statement, session too)."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else "" if isinstance(exc, str) else type(exc).__name__


# Drivers raise OperationalError for outages and for much else: PyMySQL for every server error it
# has no class for (MariaDB's CHECK failure, 4025, among them), psycopg2 for an exhausted limit.
# Only these mean the database cannot serve now (a 503, worth a retry), by each driver's codes:
# MySQL/MariaDB: every client-side error (2000-2999: no route, connection lost, gone away) and these.
_MYSQL_OUTAGES = frozenset(
    {
        1040,
        1203,
        1226,  # too many connections (in all, or the user's)
        1042,
        1043,
        1152,
        1154,
        1155,
        1156,
        1157,
        1158,
        1159,
        1160,
        1161,
        1184,  # the connection broke
        1053,
        1927,
        1317,
        4031,  # the server shut down, killed the connection or the query, or timed it out
        1047,  # Galera: the node is not ready for queries (WSREP)
        1290,
        1836,  # read-only (a replica during a failover)
        1969,
        3024,  # MariaDB's max_statement_time, MySQL's max_execution_time
    }
)
_MYSQL_LOGIN_REFUSED = frozenset({1044, 1045, 1049, 1130, 1698})  # access denied, no such database
# Lost to another transaction, which changed nothing (see SessionConflict): a deadlock (Galera's
# certification failures too), a lock wait that timed out; PostgreSQL's serialization failure, deadlock.
_MYSQL_CONFLICTS = frozenset({1213, 1205})
_POSTGRES_CONFLICTS = frozenset({"40001", "40P01"})
# PostgreSQL, by SQLSTATE class: connection, rollback, resources, object in use or lock not available,
# operator intervention (shutdown, cancel), system error.
_POSTGRES_OUTAGES = ("08", "40", "53", "55", "57", "58")
# libpq reports a refused log-in without a SQLSTATE: known by its text (English messages).
_POSTGRES_LOGIN_REFUSED = re.compile(
    r'authentication failed|(role|database) "[^"]*" does not exist'
    r"|pg_hba\.conf"
)
# ... and a connection setting it can't use (sslmode=nope, an unknown option) the same way.
_POSTGRES_BAD_SETTING = re.compile(r"invalid (dsn|connection option|[\w ]+ value|value for parameter)")
# SQLite's primary result codes: BUSY, LOCKED, NOMEM, INTERRUPT, IOERR, FULL, CANTOPEN, PROTOCOL.
_SQLITE_OUTAGES = frozenset({5, 6, 7, 9, 10, 13, 14, 15})


def _failure_kind(exc: BaseException) -> str:
    """Whether a peewee error is an "outage", a "conflict", a refused "login" (role, password, database)
    or an "error", by the driver's own code."""
    if isinstance(exc, peewee.InterfaceError):
        return "outage"  # the connection is closed or broken
    original = exc.__cause__ or exc.__context__ or exc  # the driver's exception, which peewee re-raised
    if exc.args and isinstance(exc.args[0], BaseException):
        original = exc.args[0]
    module = type(original).__module__
    if module.startswith("sqlite3"):
        code = getattr(original, "sqlite_errorcode", None)  # Python 3.11+
        if code is not None:
            return "outage" if code & 0xFF in _SQLITE_OUTAGES else "error"
    elif module.startswith("psycopg"):
        state = getattr(original, "pgcode", None) or getattr(original, "sqlstate", None)
        if state:
            if state[:2] in ("28", "3D"):  # invalid authorization, no such database
                return "login"
            if state in _POSTGRES_CONFLICTS:
                return "conflict"
            return "outage" if state[:2] in _POSTGRES_OUTAGES else "error"
        if _POSTGRES_LOGIN_REFUSED.search(str(original)):
            return "login"
        return "error" if _POSTGRES_BAD_SETTING.search(str(original)) else "outage"
    elif original.args and isinstance(original.args[0], int):  # MySQL drivers: (code, message)
        code = original.args[0]
        if code in _MYSQL_LOGIN_REFUSED:
            return "login"
        if code in _MYSQL_CONFLICTS:
            return "conflict"
        return "outage" if 2000 <= code < 3000 or code in _MYSQL_OUTAGES else "error"
    return "outage"  # no code to go by: the connection is the likeliest culprit


# -- Time: every expiry is an instant in UTC -------------------------------------------------


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def _as_utc(value: datetime.datetime) -> datetime.datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _parse_iso(text: str) -> datetime.datetime:
    """Parse ISO-8601 as JavaScript's Date#toISOString writes it ("...T12:00:00.123Z")."""
    if _OLD_FROMISOFORMAT and text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return _as_utc(datetime.datetime.fromisoformat(text))


_OLD_FROMISOFORMAT = sys.version_info < (3, 11)  # before 3.11 it reads neither "Z" nor 1-2 digit fractions


def _iso_z(value: datetime.datetime) -> str:
    """Format like JavaScript's Date#toISOString: UTC, milliseconds, a trailing Z."""
    if value.tzinfo is not UTC:
        value = _as_utc(value)
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _expiry_from_db(value: Union[str, int, datetime.datetime]) -> datetime.datetime:
    if isinstance(value, str):
        return _parse_iso(value)
    if isinstance(value, int):  # microseconds since the epoch (PostgreSQL's expiry_text)
        return _EPOCH + datetime.timedelta(microseconds=value)
    if not isinstance(value, datetime.datetime):  # SQLite keeps whatever was written: a BLOB, a number
        raise TypeError("an expiry is a datetime or ISO-8601 text, not %s" % type(value).__name__)
    return _as_utc(value)


# -- JSON: what a session may hold -----------------------------------------------------------


_ENCODER = json.JSONEncoder(
    allow_nan=False, separators=(",", ":")
)  # made once: json.dumps with options makes one a call


_WHOLE = object()  # _to_json's key when the value is not one key's


def _to_json(value: Any, key: Any = _WHOLE) -> str:
    """Encode a value (the session's `key`, if given) as JSON; a TypeError names what cannot be stored."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: nested about 1,000 levels
        path = (
            "session" if key is _WHOLE else "session[%r]" % (key,)
        )  # built only here: encoding is the hot path
        raise TypeError(
            "session value %s cannot be stored as JSON: %s" % (_find_unstorable(value, path), exc)
        ) from None


def _object_key(key: Any) -> str:
    """A session key, which is a str as a JSON object's are (json.dumps would turn 1 into "1", which
    reads back as another key)."""
    if not isinstance(key, str):
        raise TypeError(
            "session key %.80r cannot be stored: a session's keys are str, as JSON's are" % (key,)
        )
    return key


def _json_object(members: dict[str, str]) -> str:
    """A JSON object from str keys and already-encoded values."""
    return "{" + ",".join([_ENCODER.encode(key) + ":" + text for key, text in members.items()]) + "}"


def _find_unstorable(value: Any, path: str = "session", seen: Optional[set] = None) -> str:
    """The path of the first value json.dumps refuses (a type, NaN or a cycle)."""
    seen = set() if seen is None else seen
    if isinstance(value, (dict, list, tuple)):
        if id(value) in seen:
            return path + " (a reference cycle)"
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            try:
                json.dumps(item, allow_nan=False)
            except (TypeError, ValueError):
                return _find_unstorable(item, "%s[%r]" % (path, key), seen)
            except RecursionError:
                return "%s[%r] (nested too deeply)" % (path, key)
    return path


# MariaDB's JSON type is a CHECK (json_valid), which refuses a document nested 32 levels deep or more:
# a session (the object itself is a level) nests at most 31, on every database, so any table takes it.
MAX_JSON_DEPTH = 31
_BRACKETS = bytes.maketrans(b"{}", b"[]")  # for depth, an object is an array
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b'[]{}"')))  # the quotes stay, to tell strings


def _check_depth(data: str) -> None:
    """Refuse, naming its key, a session JSON text nested deeper than MAX_JSON_DEPTH."""
    if len(data) <= 2 * MAX_JSON_DEPTH or data.count("[") + data.count("{") <= MAX_JSON_DEPTH:
        return  # too few brackets to nest that deep: most sessions, for two scans in C
    # All in C (bytes methods): a regular expression, or a split at each quote, took as long as the encoding.
    raw = data.encode("utf-8", "surrogatepass")
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")  # escapes: an escaped quote ends no string
    brackets = raw.translate(_BRACKETS, _NOT_BRACKETS).replace(b'""', b"")  # strings without brackets go
    if b'"' in brackets:
        brackets = b"".join(brackets.split(b'"')[::2])  # the rest: brackets in strings don't nest
    for _ in range(MAX_JSON_DEPTH):
        brackets = brackets.replace(b"[]", b"")  # one level less, everywhere
        if not brackets:
            return
    sess = json.loads(data)
    key = next((key for key, value in sess.items() if _nests_deeper(value, MAX_JSON_DEPTH - 1)), None)
    path = "session" if key is None else "session[%r]" % (key,)
    raise TypeError(
        "%s cannot be stored: a session nests at most %d levels of objects and arrays, counting "
        "the session itself (MariaDB's JSON refuses more)" % (path, MAX_JSON_DEPTH)
    )


def _nests_deeper(value: Any, levels: int) -> bool:
    """Whether a decoded JSON value nests more than `levels` levels of objects and arrays."""
    if not isinstance(value, (dict, list)):
        return False
    if levels == 0:
        return True
    items = value.values() if isinstance(value, dict) else value
    return any(_nests_deeper(item, levels - 1) for item in items)


def _find_lone_surrogate(value: Any, path: str) -> Optional[str]:
    """The path of the first str, or dict key, holding a lone UTF-16 surrogate; None when there is none."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")  # refuses surrogates, which only a pair's JSON escape would have joined
        except UnicodeEncodeError:
            return path
    elif isinstance(value, dict):
        for key, item in value.items():
            found = _find_lone_surrogate(key, "%s (the key %r)" % (path, key)) or _find_lone_surrogate(
                item, "%s[%r]" % (path, key)
            )
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_lone_surrogate(item, "%s[%d]" % (path, index))
            if found:
                return found
    return None


def _refuse_lone_surrogates(data: str, where: str) -> None:
    """Refuse, naming its key, a session JSON text holding a lone UTF-16 surrogate (a str from bytes decoded
    with surrogateescape, say), which the encoder writes as an escape, as JSON.stringify does."""
    if "\\ud" in data:
        sess = json.loads(data)
        try:
            json.dumps(sess, ensure_ascii=False).encode(
                "utf-8"
            )  # in C: the walk below only names the culprit
        except UnicodeEncodeError:
            raise TypeError(
                "%s cannot be stored in %s: it holds a lone UTF-16 surrogate"
                % (_find_lone_surrogate(sess, "session"), where)
            ) from None


def _finite_float(text: str) -> float:
    value = float(text)
    if abs(value) == float(
        "inf"
    ):  # 1e400: JSON.stringify never writes one, and it could not be written back
        raise ValueError("number out of range: %.40s" % text)
    return value


def _no_constant(name: str) -> None:
    raise ValueError("%s is not JSON" % name)  # NaN, Infinity: Python's json reads them, JSON.parse doesn't


# A call back into Python for every float: sessions hold few (a session of floats decodes at half speed).
_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)


def _session_from_json(sid: str, raw: Any) -> Optional[dict]:
    """Decode a stored sess value; a damaged one is logged and reads as no session."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        if isinstance(text, str):
            sess = _DECODER.decode(text)
        else:
            sess = text  # decoded by the driver already
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past what Python parses
        logger.warning("session %.8s...: stored data is not valid JSON (%s); treated as missing", sid, exc)
        return None
    if not isinstance(sess, dict):
        logger.warning("session %.8s...: stored data is not a JSON object; treated as missing", sid)
        return None
    return sess


MAX_LIFETIME = datetime.timedelta(days=36500)  # a stored expiry beyond this is damage, not a session


def _check_lifetime(seconds: Optional[float], what: str) -> None:
    if seconds is not None and not _is_lifetime(seconds):
        raise ValueError(
            "%s must be a positive number of seconds up to 36,500 days, or None; not %r" % (what, seconds)
        )


def _is_lifetime(value: Any, per_second: int = 1) -> bool:
    """Whether a number (of seconds, or of 1/per_second seconds) can be a cookie's lifetime: positive, and
    no longer than MAX_LIFETIME."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0 < value <= MAX_LIFETIME.total_seconds() * per_second
    )  # NaN fails both comparisons


def _checked_expiry(sid: str, raw: Any) -> Optional[datetime.datetime]:
    """A stored expiry as an aware UTC datetime; an unreadable or absurd one is logged and reads as None."""
    try:
        expiry = _expiry_from_db(raw)
        if expiry - _utcnow() <= MAX_LIFETIME:
            return expiry
    except (ValueError, TypeError, OverflowError):
        pass
    logger.warning(
        "session %.8s...: stored expiry %.40r is unreadable or absurd; treated as missing", sid, raw
    )
    return None


def _live_window(db_time: Callable[[datetime.datetime], Any]) -> tuple[Any, Any]:
    """The bounds of a live row's expiry, as a database's column holds them: now, and now + MAX_LIFETIME.

    get() reads a later expiry as damage (see _checked_expiry); length(), all() and stats() count
    between the same bounds, so a row that get() never returns is not counted live either.
    """
    now = _utcnow()
    return db_time(now), db_time(now + MAX_LIFETIME)


def _expiry_of(sess: dict, now: datetime.datetime) -> datetime.datetime:
    """When a session expires (see _cookie_expiry); one more than MAX_LIFETIME away is a ValueError.

    get() would read it as damage: a session saved with it could never be read back.
    """
    try:
        expiry = _cookie_expiry(sess, now)
    except OverflowError:  # an aware date near year 1 or 9999, moved to UTC
        raise ValueError(
            "sess['cookie']['expires'] is out of range: %.40r" % (sess["cookie"]["expires"],)
        ) from None
    if abs(expiry - now) > MAX_LIFETIME:
        raise ValueError(
            "sess['cookie'] gives an expiry of %s, more than 36,500 days from now" % _iso_z(expiry)
        )
    return expiry


def _cookie_expiry(sess: dict, now: datetime.datetime) -> datetime.datetime:
    """When a session expires: cookie.expires, else now + cookie.maxAge ms, else now + 1 day."""
    cookie = sess.get("cookie")
    if not isinstance(cookie, dict):
        return now + ONE_DAY
    expires = cookie.get("expires")
    if isinstance(expires, datetime.datetime):
        return _as_utc(expires)
    if isinstance(expires, str):
        try:
            return _parse_iso(expires)
        except ValueError:
            raise ValueError("sess['cookie']['expires'] is not an ISO-8601 date: %r" % expires) from None
    if expires is not None:
        raise ValueError("sess['cookie']['expires'] must be a str, a datetime or None, not %r" % (expires,))
    max_age = cookie.get("maxAge", cookie.get("originalMaxAge"))
    if max_age is None:
        return now + ONE_DAY
    if isinstance(max_age, bool) or not isinstance(max_age, (int, float)):
        raise ValueError("sess['cookie']['maxAge'] must be a number of milliseconds, not %r" % (max_age,))
    try:
        return now + datetime.timedelta(milliseconds=max_age)
    except (OverflowError, ValueError):  # ValueError: NaN
        raise ValueError("sess['cookie']['maxAge'] is out of range: %r" % (max_age,)) from None


def _check_session(sess: Any) -> None:
    if not isinstance(sess, dict):
        raise TypeError("a session is a dict, not %s" % type(sess).__name__)


def _is_valid_sid(sid: Any) -> bool:
    return isinstance(sid, str) and 0 < len(sid) <= MAX_SID_LENGTH and sid.isprintable()


def _check_sid(sid: Any) -> None:
    if not _is_valid_sid(sid):
        raise ValueError(
            "a session id is a non-empty printable str of at most %d characters, not %.80r"
            % (MAX_SID_LENGTH, sid)
        )


# -- Dialects: each database's SQL and its few hooks ------------------------------------------


def _database_of(db: peewee.Database) -> peewee.Database:
    """The real database behind a DatabaseProxy (or the database itself)."""
    while isinstance(db, peewee.DatabaseProxy):
        if db.obj is None:
            raise SessionStoreError("the DatabaseProxy has not been initialized yet")
        db = db.obj
    return db


def _clamped(column: str, aggregate: str = "") -> str:
    """PostgreSQL: a timestamptz column (or an aggregate of it) kept within years 1000-9000.

    Only a damaged row holds a time outside them ('infinity', say, which no driver reads as a
    datetime): clamped, such an expiry reads as absurd (_checked_expiry) and its row as no session.
    """
    return f"{aggregate}(LEAST(GREATEST({column}, '1000-01-01 00:00:00+00'), '9000-01-01 00:00:00+00'))"


def _utc_text(column: str, aggregate: str = "") -> str:
    """PostgreSQL: a timestamptz column (or an aggregate of it) as ISO text in UTC, whatever the session's
    DateStyle and TimeZone; NULL stays NULL. Fixed-width, so the texts sort as the times do."""
    return f"""to_char({_clamped(column, aggregate)} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def _epoch_microseconds(column: str, aggregate: str = "") -> str:
    """PostgreSQL: a timestamptz column (or an aggregate of it) as whole microseconds since the epoch.

    An instant, whatever the session's DateStyle and TimeZone, and exact (timestamptz holds
    microseconds); a number is cheaper to make and to read than text. NULL stays NULL.
    """
    return f"CAST(EXTRACT(EPOCH FROM {_clamped(column, aggregate)}) * 1000000 AS BIGINT)"


class _Dialect:
    """The SQL of one session table on one kind of database, and that database's few hooks.

    One subclass per database, as peewee has a Database subclass per database: the store
    picks one when it is prepared (_dialect_for) and asks it, never the database's name.
    Identifiers are validated and quoted once, here; values are always bound.
    """

    name = ""
    sid_type = "VARCHAR(%d)" % MAX_SID_LENGTH  # the columns' types, for CREATE TABLE
    sess_type = "TEXT"
    expired_type = "DATETIME"
    atomic_args: tuple[str, ...] = ()  # what db.atomic() needs to lock before a read-modify-write
    lock_clause = " FOR UPDATE"  # locks the row a read returns, until the transaction ends

    def __init__(self, db: peewee.Database, table: str, sid_column: str) -> None:
        open_quote, close_quote = db.quote[0], db.quote[1]
        self.quote, self.table_name = db.quote, table  # for the user index, built later (use_user_key)
        self.table = t = open_quote + table + close_quote
        self.sid = sid = open_quote + sid_column + close_quote
        self.param = p = db.param
        sess, expiry = self.sess_text("sess"), self.expiry_text("expired")
        same = self.same_text(p)  # the row holds the text a load or save left (a compare-and-set)
        is_sid = self.sid_equals(sid, p)
        self.get = f"SELECT {sess}, {expiry} FROM {t} WHERE {is_sid} AND expired > {p}"
        self.get_for_update = self.get + self.lock_clause
        self.replace_if_unchanged = (
            f"UPDATE {t} SET sess = {p}, expired = {p} WHERE {is_sid} AND expired > {p} AND {same}"
        )
        self.touch_if_unchanged = f"UPDATE {t} SET expired = {p} WHERE {is_sid} AND expired > {p} AND {same}"
        self.set = f"INSERT INTO {t} ({sid}, sess, expired) VALUES ({p}, {p}, {p}) {self.upsert(sid, p)}"
        self.touch = f"UPDATE {t} SET expired = {p} WHERE {is_sid} AND expired > {p}"
        self.destroy = f"DELETE FROM {t} WHERE {is_sid}"
        # Live: expiring after now and no later than get() believes (_live_window).
        self.length = f"SELECT COUNT(*) FROM {t} WHERE expired > {p} AND expired <= {p}"
        self.all = f"SELECT {sid}, {sess}, {expiry} FROM {t} WHERE expired > {p} AND expired <= {p}"
        self.clear = f"DELETE FROM {t}"
        soonest, latest = self.expiry_text("expired", "MIN"), self.expiry_text("expired", "MAX")
        self.live_stats = (
            f"SELECT COUNT(*), {soonest}, {latest} FROM {t} WHERE expired > {p} AND expired <= {p}"
        )
        self.expired_count = f"SELECT COUNT(*) FROM {t} WHERE expired <= {p}"
        # Bounded batches in expiry order: each statement walks the expired index, holding its locks briefly.
        self.sweep_batch = (
            f"DELETE FROM {t} WHERE {sid} IN (SELECT {sid} FROM {t} WHERE expired <= {p}"
            f" ORDER BY expired LIMIT {p})"
        )

    @classmethod
    def for_server(cls, db: peewee.Database, table: str, sid_column: str) -> "_Dialect":
        """The dialect for the server behind db (called once, on a connection the store opened)."""
        return cls(db, table, sid_column)

    @classmethod
    def for_table(cls, db: peewee.Database, table: str, sid_column: str) -> None:
        """Checks of a table that exists (called once, after it was found or made)."""

    @classmethod
    def check_database(cls, db: peewee.Database) -> None:
        """Refuse, when the store is made, a database object that could never serve it."""

    @classmethod
    def file_of(cls, db: peewee.Database) -> Optional[str]:
        """The file the database lives in, where it is one (SQLite's: connecting would create it)."""
        return None

    # The hooks: how this database writes what the store asks.

    def sess_text(self, column: str) -> str:
        """The sess column read as the JSON text it holds."""
        return column

    def expiry_text(self, column: str, aggregate: str = "") -> str:
        """The expired column (or an aggregate of it) as read back; _expiry_from_db parses it."""
        return f"{aggregate}({column})" if aggregate else column

    def same_text(self, param: str) -> str:
        """A condition: the row's sess is the bound JSON text."""
        return f"sess = {param}"

    def sid_equals(self, sid: str, param: str) -> str:
        """A condition: the row's id is the bound one, byte for byte."""
        return f"{sid} = {param}"

    def upsert(self, sid: str, param: str) -> str:
        """What makes the INSERT of set() replace a row that has its id (see set_params)."""
        return f"ON CONFLICT ({sid}) DO UPDATE SET sess = {param}, expired = {param}"

    def set_params(self, sid: str, text: str, expired: Any) -> tuple:
        # Values are bound twice (insert, then update) so one form serves all three databases.
        return (sid, text, expired, text, expired)

    @staticmethod
    def db_time(value: datetime.datetime) -> Any:
        """An aware datetime as this database's expired column holds it (as connect-session-knex does)."""
        return _iso_z(value)  # SQLite: ISO text, which compares in time order

    def now(self) -> Any:
        return self.db_time(_utcnow())

    def sweeper(self, store: "PeeweeSessionStore") -> Callable[[int], tuple[int, bool]]:
        """One batch of a sweep: size -> (rows deleted, whether more may be expired)."""
        return functools.partial(_sweep_in_expiry_order, store)

    def table_bytes(self, db: peewee.Database, table: str) -> Optional[int]:
        """The table's size with its indexes (SQLite: only when built with the dbstat table)."""
        return _scalar(
            db, "SELECT SUM(pgsize) FROM dbstat WHERE name = ? OR name = ?", (table, table + _INDEX_SUFFIX)
        )

    def check_storable(self, sid: str, data: str) -> None:
        """Refuse, before any statement, a JSON text that this database would refuse."""

    # A user's sessions (PeeweeSessionStore's user_key): an index on the user id the session JSON
    # holds at a path, as text. The JSON is read by the database itself, so rows that Node's
    # connect-session-knex writes are indexed alike. The rule on every database: a string is
    # itself, an integer its decimal text (42 and "42" are one user), anything else is no user.

    def use_user_key(self, path: tuple[str, ...]) -> None:
        """Build the user index's DDL, and the statements of sessions_of/destroy_sessions_of, for a path."""
        open_quote, close_quote = self.quote[0], self.quote[1]
        name = _check_identifier(
            self.table_name + _USER_INDEX_SUFFIX,
            "the user index's name (table name + %r)" % _USER_INDEX_SUFFIX,
        )
        self.user_index_name = name
        self.user_index = self.user_index_sql(open_quote + name + close_quote, path)
        # The very expression the index holds: a planner uses an expression index only for that expression.
        user, t, sid, p = self.user_value(path), self.table, self.sid, self.param
        sess, expiry = self.sess_text("sess"), self.expiry_text("expired")
        self.sessions_of = f"SELECT {sid}, {sess}, {expiry} FROM {t} WHERE {user} = {p} AND expired > {p}"
        # Expired rows go too; `keep` is bound as '' when there is none (no session id is empty).
        self.destroy_sessions_of = f"DELETE FROM {t} WHERE {user} = {p} AND {sid} <> {p}"

    def user_value(self, path: tuple[str, ...]) -> str:
        """The user id at `path` in sess, as text (NULL when it is not a string or an integer)."""
        at = "'$." + ".".join(path) + "'"
        # json_valid first: json_type raises on malformed text, which would make a damaged row unwritable.
        return (
            f"(CASE WHEN json_valid(sess) THEN CASE WHEN json_type(sess, {at}) IN ('integer', 'text')"
            f" THEN CAST(json_extract(sess, {at}) AS TEXT) END END)"
        )

    def user_index_sql(self, index: str, path: tuple[str, ...]) -> list[str]:
        """The statements that add the user index to the table (each safe to run again)."""
        # Partial: a session with no user (a visitor's) costs no index entry. `value = ?` implies
        # IS NOT NULL, so the planners use it for sessions_of() (checked with EXPLAIN).
        user = self.user_value(path)
        return [f"CREATE INDEX IF NOT EXISTS {index} ON {self.table} ({user}) WHERE {user} IS NOT NULL"]

    def user_index_found(self, db: peewee.Database, path: tuple[str, ...]) -> Optional[bool]:
        """Whether the table has the user index: None when it has none, False when it is on another key."""
        row = db.execute_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (self.user_index_name,)
        ).fetchone()
        return None if row is None else self.user_value(path) in (row[0] or "")  # SQLite keeps the DDL text

    # The store's own connection per thread (PeeweeSessionStore._run).

    def own_database(self, db: peewee.Database) -> Optional[peewee.Database]:
        """A database for the store's own connection in each thread: db's class without its pool, with
        db's connect parameters and settings, and no connection yet (None: use db's connections).

        Instance attributes that are functions (a test's wrapper of execute_sql, say) stay db's.
        """
        plain = next(
            cls
            for cls in type(db).__mro__
            if issubclass(cls, peewee.Database) and not issubclass(cls, PooledDatabase)
        )
        own: Any = plain.__new__(plain)
        own.__dict__.update({key: value for key, value in vars(db).items() if not callable(value)})
        own._state = _OwnState(_Spares())  # per thread, whatever db's thread_safe
        own._lock = threading.Lock()
        _OWN_DATABASES.add(own)
        return own

    def lost(self, connection: Any, exc: BaseException) -> bool:
        """Whether a statement's error means the server dropped the connection (it is unusable)."""
        return bool(getattr(connection, "closed", False))  # psycopg 2 and 3 mark a dropped connection


class _SqliteDialect(_Dialect):
    name = "sqlite"
    atomic_args = ("IMMEDIATE",)  # no row locks: the write lock, taken before the read
    lock_clause = ""
    journal_mode = "wal"

    @classmethod
    def for_server(cls, db: peewee.Database, table: str, sid_column: str) -> "_Dialect":
        dialect = cls(db, table, sid_column)
        dialect.journal_mode = str(db.execute_sql("PRAGMA journal_mode").fetchone()[0]).lower()
        if dialect.journal_mode not in ("wal", "memory"):
            logger.warning(
                "SQLite database %s is in %s journal mode: the session store uses the app's connection, "
                "opened and closed for each request that has none, because in this mode a connection of its "
                "own would wait for the app's readers in the same thread. Open the database with "
                "pragmas={'journal_mode': 'wal'} (a lasting change to the file) so that the store keeps a "
                "connection per thread and readers never wait for a write.",
                db.database,
                dialect.journal_mode,
            )
        return dialect

    def own_database(self, db: peewee.Database) -> Optional[peewee.Database]:
        # Only in WAL mode: otherwise a write on a second connection of a thread waits for the app's
        # open reads on its first (until the busy timeout); and an in-memory database is per connection.
        if self.journal_mode != "wal":
            return None
        own: Any = super().own_database(db)
        # A spare connection moves to another thread (_Spares), used by one thread at a time.
        own.connect_params = dict(own.connect_params, check_same_thread=False)
        return own

    @classmethod
    def file_of(cls, db: peewee.Database) -> Optional[str]:
        path = db.database
        if not isinstance(path, str) or path == ":memory:" or db.connect_params.get("uri"):
            return None
        return path

    @classmethod
    def check_database(cls, db: peewee.Database) -> None:
        # SQLite can't create a file's folder: every request would fail as if the database were down.
        if db.connect_params.get("uri"):
            return
        path = db.database
        if not path or path == ":memory:" or not isinstance(path, (str, os.PathLike)):
            return  # in memory, a temporary file, or a database not initialized yet
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise SessionStoreError(
                "the SQLite database %s cannot be created: the folder %s does not exist" % (path, folder)
            )
        if os.path.isdir(path):
            raise SessionStoreError("the SQLite database %s is a folder, not a file" % (path,))


class _PostgresqlDialect(_Dialect):
    name = "postgresql"
    sess_type = "JSON"
    expired_type = "TIMESTAMP WITH TIME ZONE"

    def __init__(self, db: peewee.Database, table: str, sid_column: str) -> None:
        super().__init__(db, table, sid_column)
        t, sid, p, expiry = self.table, self.sid, self.param, _utc_text("expired")
        # = ANY(ARRAY(...)) deletes by primary key; a plain IN may hash-join over the whole table.
        self.sweep_batch = (
            f"DELETE FROM {t} WHERE {sid} = ANY(ARRAY(SELECT {sid} FROM {t} WHERE expired <= {p}"
            f" ORDER BY expired LIMIT {p} FOR UPDATE SKIP LOCKED))"
        )
        # At most a batch of the expired rows of a window of pages, [first, end): a TID range scan
        # (PostgreSQL 14+). ONLY: a child table (INHERITS) has its own row positions.
        # Returns how many rows went and a sample of where their entries sit in the expired index:
        # their expiries at the given fractions of the way from the lowest to the highest (the
        # texts sort as the times do, byte by byte).
        self.sweep_pages = (
            f"WITH gone AS (DELETE FROM ONLY {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM ONLY {t}"
            f" WHERE ctid >= {p}::tid AND ctid < {p}::tid AND expired <= {p}"
            f" LIMIT {p} FOR UPDATE SKIP LOCKED)) AND expired <= {p} RETURNING expired)"
            f" SELECT COUNT(*), percentile_disc({p}::float8[])"
            f' WITHIN GROUP (ORDER BY {expiry} COLLATE "C") FROM gone'
        )
        # A slice of the expired index, read in order up to its first visible row: an index scan
        # marks the entries it steps over whose rows are gone for good, so later scans skip them.
        # (ORDER BY ... LIMIT 1 keeps it an index scan; a bitmap scan would mark nothing.)
        self.index_slice = (
            f"SELECT 1 FROM ONLY {t} WHERE expired >= {p} AND expired <= {p} ORDER BY expired LIMIT 1"
        )
        # The table's pages now, if this server can scan a range of them (and None if not).
        self.table_pages = (
            f"SELECT CASE WHEN current_setting('server_version_num')::int >= 140000 THEN"
            f" pg_relation_size(to_regclass(quote_ident({p}))) / current_setting('block_size')::int END"
        )

    def sess_text(self, column: str) -> str:
        return f"CAST({column} AS TEXT)"  # the driver would decode json itself: every backend decodes alike

    def check_storable(self, sid: str, data: str) -> None:
        # A json column keeps any text, but the user index's expression decodes the document, and
        # PostgreSQL's text holds neither NUL nor a lone surrogate: the INSERT would fail.
        if getattr(self, "user_index", None):
            if "\\u0000" in data:
                key = next(
                    (
                        key
                        for key, value in json.loads(data).items()
                        if "\x00" in key or "\\u0000" in _to_json(value)
                    ),
                    None,
                )
                raise TypeError(
                    "%s cannot be stored in PostgreSQL with a user index: it holds a NUL character"
                    % ("session" if key is None else "session[%r]" % (key,))
                )
            _refuse_lone_surrogates(data, "PostgreSQL with a user index")

    def expiry_text(self, column: str, aggregate: str = "") -> str:
        return _epoch_microseconds(column, aggregate)

    def same_text(self, param: str) -> str:
        return f"CAST(sess AS TEXT) = {param}"

    @staticmethod
    def db_time(value: datetime.datetime) -> Any:
        return _as_utc(value)  # timestamptz stores the instant

    def sweeper(self, store: "PeeweeSessionStore") -> Callable[[int], tuple[int, bool]]:
        return _PageOrderSweep(store).step

    def table_bytes(self, db: peewee.Database, table: str) -> Optional[int]:
        return _scalar(
            db, f"SELECT pg_total_relation_size(to_regclass(quote_ident({self.param})))", (table,)
        )

    def user_value(self, path: tuple[str, ...]) -> str:
        # sess is json (connect-session-knex's type), not jsonb: #>> gives a number's text as written,
        # so an integer is told from a float (42.0, 1e3) by its digits.
        at = "'{" + ",".join(path) + "}'"
        value, text = f"sess #> {at}", f"sess #>> {at}"
        return (
            f"(CASE json_typeof({value}) WHEN 'string' THEN {text}"
            f" WHEN 'number' THEN CASE WHEN {text} ~ '^-?[0-9]+$' THEN {text} END END)"
        )

    def user_index_found(self, db: peewee.Database, path: tuple[str, ...]) -> Optional[bool]:
        row = db.execute_sql(
            "SELECT pg_get_indexdef(to_regclass(quote_ident(%s)))", (self.user_index_name,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return "'{" + ",".join(path) + "}'" in row[0]  # the definition as PostgreSQL rewrites it


# What the sweep needs of a MySQL server: JSON_ARRAYAGG (MariaDB 10.5+, MySQL 5.7.22+; older ones are past
# end of life).
_MYSQL_FEATURE_PROBE = "SELECT JSON_ARRAYAGG(1)"
_MYSQL_LOST = frozenset((1927, 2006, 2013, 4031))


class _MysqlDialect(_Dialect):
    name = "mysql"
    sess_type = "JSON"
    max_packet = 1 << 30  # the server's max_allowed_packet (read in for_server)
    # connect-session-knex's varchar(255), comparing bytes (the server's default collation would not)
    sid_type = "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    group_concat_lift = ""  # MariaDB's prefix for a statement that aggregates many keys

    def __init__(self, db: peewee.Database, table: str, sid_column: str) -> None:
        super().__init__(db, table, sid_column)
        t, sid, p, lift = self.table, self.sid, self.param, self.group_concat_lift
        # Each read returns one row: how many keys it read, the keys as one JSON array and the last
        # one. A thousand rows parsed by the driver would hold the sweeping process's GIL (and so its
        # requests) for milliseconds a batch. The array is UTF-8 bytes whatever the column's and the
        # connection's character sets.

        def read_keys(keys: str, rows: str) -> str:
            return (
                f"{lift}SELECT COUNT(*), CAST(JSON_ARRAYAGG(CONVERT({keys} USING utf8mb4)) AS BINARY),"
                f" MAX({sid}) FROM ({rows}) AS batch"
            )

        self.sweep_expired_keys = read_keys(
            sid, f"SELECT {sid} FROM {t} WHERE expired <= {p} ORDER BY expired LIMIT {p}"
        )
        self.sweep_window = {  # the next `size` keys, from the start or after a key; live ones are null
            after: read_keys(
                f"CASE WHEN expired <= {p} THEN {sid} END",
                f"SELECT {sid}, expired FROM {t} {where}ORDER BY {sid} LIMIT {p}",
            )
            for after, where in ((False, ""), (True, f"WHERE {sid} > {p} "))
        }
        # By the primary key, always: on a small table the optimizer may scan it all, locking every row.
        self._delete_expired_keys = (
            f"DELETE {t} FROM {t} FORCE INDEX (PRIMARY) WHERE expired <= {p} AND {sid} IN ({{keys}})"
        )

    @classmethod
    def for_server(cls, db: peewee.Database, table: str, sid_column: str) -> "_Dialect":
        """MariaDB's dialect or MySQL's; refuses, by name, a server the store cannot sweep on."""
        version = db.execute_sql("SELECT VERSION()").fetchone()[0]
        try:
            db.execute_sql(_MYSQL_FEATURE_PROBE).fetchone()
        except peewee.DatabaseError as exc:
            raise SessionStoreError(
                "peewee_sessions needs MariaDB 10.5+ or MySQL 5.7.22+ (for JSON_ARRAYAGG); "
                "this server is %s" % version
            ) from exc
        dialect = (_MariadbDialect if "mariadb" in version.lower() else _MysqlDialect)(db, table, sid_column)
        dialect.max_packet = int(db.execute_sql("SELECT @@max_allowed_packet").fetchone()[0])
        return dialect

    def same_text(self, param: str) -> str:
        return f"sess = CAST({param} AS JSON)"  # MySQL's JSON type normalizes: compare JSON values

    @classmethod
    def for_table(cls, db: peewee.Database, table: str, sid_column: str) -> None:
        """Warn, once per store, when the sid column compares case- or space-insensitively (a knex table)."""
        collation = db.execute_sql(
            "SELECT collation_name FROM information_schema.columns WHERE table_schema = DATABASE()"
            f" AND table_name = {db.param} AND column_name = {db.param}",
            (table, sid_column),
        ).fetchone()
        if collation and collation[0] and not collation[0].endswith("_bin"):
            logger.warning(
                "the session id column %s.%s has the collation %s, which matches ids that differ in case or "
                "trailing spaces; the store compares ids byte for byte all the same, but two such ids can't "
                "both "
                "be stored. Fix the table with: ALTER TABLE %s MODIFY %s %s NOT NULL",
                table,
                sid_column,
                collation[0],
                table,
                sid_column,
                cls.sid_type,
            )

    def sid_equals(self, sid: str, param: str) -> str:
        # A knex-made table's column compares case-insensitively and ignores trailing spaces: compare
        # bytes (which still finds the row through the primary key).
        return f"{sid} = CAST({param} AS BINARY)"

    def upsert(self, sid: str, param: str) -> str:
        # Never over another session whose id only matches under a case-insensitive collation.
        same = self.sid_equals(sid, param)
        return (
            f"ON DUPLICATE KEY UPDATE sess = IF({same}, {param}, sess),"
            f" expired = IF({same}, {param}, expired)"
        )

    def set_params(self, sid: str, text: str, expired: Any) -> tuple:
        return (sid, text, expired, sid, text, sid, expired)

    @staticmethod
    def db_time(value: datetime.datetime) -> Any:
        return _as_utc(value).replace(tzinfo=None, microsecond=0)  # DATETIME in UTC, whole seconds

    def sweeper(self, store: "PeeweeSessionStore") -> Callable[[int], tuple[int, bool]]:
        return _KeyOrderSweep(store.db, self).step

    def delete_expired_keys(self, count: int) -> str:
        """A DELETE of the expired rows among `count` sids, bound after the time."""
        return self._delete_expired_keys.replace("{keys}", ", ".join([self.param] * count))

    def table_bytes(self, db: peewee.Database, table: str) -> Optional[int]:
        return _scalar(
            db,
            "SELECT data_length + index_length FROM information_schema.tables "
            f"WHERE table_schema = DATABASE() AND table_name = {self.param}",
            (table,),
        )

    # MySQL/MariaDB index an expression through a generated column: a virtual one takes no space in
    # the rows, and connect-session-knex's inserts name their columns, so they go on working.
    user_column = "sess_user"

    def user_value(self, path: tuple[str, ...]) -> str:
        return f"`{self.user_column}`"

    def user_index_sql(self, index: str, path: tuple[str, ...]) -> list[str]:
        value = "JSON_EXTRACT(sess, '$.%s')" % ".".join(path)
        # VARBINARY compares bytes, where a utf8mb4 collation matches 'Alice' to 'alice ' (case, PAD SPACE).
        # Longer ids read as none: a value too long for the column would make the row's INSERT fail.
        text, column = f"JSON_UNQUOTE({value})", self.user_value(path)
        user = (
            f"CASE WHEN JSON_TYPE({value}) IN ('INTEGER', 'UNSIGNED INTEGER', 'STRING')"
            f" AND CHAR_LENGTH({text}) <= {MAX_USER_ID_LENGTH} THEN {text} END"
        )
        return [
            f"ALTER TABLE {self.table} ADD COLUMN {column} VARBINARY({4 * MAX_USER_ID_LENGTH})"
            f" AS ({user}) VIRTUAL, ADD INDEX `{self.user_index_name}` ({column})"
        ]

    def user_index_found(self, db: peewee.Database, path: tuple[str, ...]) -> Optional[bool]:
        row = db.execute_sql(
            "SELECT c.generation_expression FROM information_schema.columns c"
            " JOIN information_schema.statistics s ON s.table_schema = c.table_schema"
            " AND s.table_name = c.table_name AND s.column_name = c.column_name"
            " WHERE c.table_schema = DATABASE() AND c.table_name = %s AND c.column_name = %s"
            " AND s.index_name = %s",
            (self.table_name, self.user_column, self.user_index_name),
        ).fetchone()
        if row is None:
            return None
        # As the server keeps it: MariaDB as written, MySQL rewritten (with \' around the path, say).
        return re.search(re.escape("$." + ".".join(path)) + r"(?![\w.])", row[0] or "") is not None

    def lost(self, connection: Any, exc: BaseException) -> bool:
        # PyMySQL closes a connection whose socket failed; the server's "killed", "gone away", "lost"
        # and "disconnected for inactivity" may come first, as a statement's error.
        return not getattr(connection, "open", True) or bool(exc.args and exc.args[0] in _MYSQL_LOST)

    def check_storable(self, sid: str, data: str) -> None:
        # MySQL's JSON refuses a lone UTF-16 surrogate, as bad input (a CHECK failure on MariaDB).
        _refuse_lone_surrogates(data, "MySQL/MariaDB's JSON")
        # set() binds the text twice; past max_allowed_packet the server drops the connection ("gone away").
        if (
            2 * 4 * len(data) + 1024 > self.max_packet
            and 2 * len(data.encode("utf-8", "surrogatepass")) + 1024 > self.max_packet
        ):
            raise ValueError(
                "session %.8s... is %d characters of JSON, more than this server's "
                "max_allowed_packet (%d bytes) takes" % (sid, len(data), self.max_packet)
            )


class _MariadbDialect(_MysqlDialect):
    # MariaDB cuts JSON_ARRAYAGG at group_concat_max_len: lifted for the one statement.
    group_concat_lift = "SET STATEMENT group_concat_max_len = 4294967295 FOR "

    def same_text(self, param: str) -> str:
        return f"BINARY sess = {param}"  # MariaDB keeps JSON as the text it was given


_DIALECTS: tuple[tuple[type, type[_Dialect]], ...] = (
    (peewee.PostgresqlDatabase, _PostgresqlDialect),
    (peewee.MySQLDatabase, _MysqlDialect),
    (peewee.SqliteDatabase, _SqliteDialect),
)
# The names create_table_sql() takes: the URL schemes'.
_DIALECT_NAMES = {
    "sqlite": peewee.SqliteDatabase,
    "postgresql": peewee.PostgresqlDatabase,
    "postgres": peewee.PostgresqlDatabase,
    "mariadb": peewee.MySQLDatabase,
    "mysql": peewee.MySQLDatabase,
}


def _dialect_for(db: peewee.Database) -> type[_Dialect]:
    """The dialect class of a database (through a DatabaseProxy)."""
    db = _database_of(db)
    for database_class, dialect in _DIALECTS:
        if isinstance(db, database_class):
            return dialect
    raise TypeError(
        "peewee-sessions supports SQLite, PostgreSQL and MySQL/MariaDB, not %s" % type(db).__name__
    )


def _check_database(db: Any) -> None:
    """Refuse, when the store is made, a database object that could never serve it (see check_database)."""
    if not isinstance(db, peewee.DatabaseProxy) or db.obj is not None:  # else checked on first use
        _dialect_for(db).check_database(_database_of(db))


def _scalar(db: peewee.Database, sql: str, params: tuple) -> Optional[int]:
    """A query's one number, or None where the database can't answer it (SQLite built without dbstat)."""
    try:
        with db.atomic():  # on PostgreSQL a failed statement must not poison an open transaction
            row = db.execute_sql(sql, params).fetchone()
    except peewee.DatabaseError:
        return None
    return None if row is None or row[0] is None else int(row[0])


# -- The model: connect-session-knex's table, built at run time -------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_IDENTIFIER = 63  # PostgreSQL's limit; MySQL's is 64
_INDEX_SUFFIX = "_expired_index"  # knex's name for the index on `expired`
_USER_INDEX_SUFFIX = "_user_index"  # the index on the user id (PeeweeSessionStore's user_key)
_USER_KEY_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
MAX_USER_ID_LENGTH = 255  # longer ids are not indexed (MySQL/MariaDB's column holds 255 characters)


def _check_identifier(name: Any, what: str, max_length: int = _MAX_IDENTIFIER) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.match(name) or len(name) > max_length:
        raise ValueError(
            "%s must be a plain SQL identifier (letters, digits, _; at most %d characters), not %r"
            % (what, max_length, name)
        )
    return name


class SessionIdField(peewee.CharField):
    """`sid`: connect-session-knex's varchar(255), comparing bytes on MySQL/MariaDB."""

    def ddl_datatype(self, ctx):
        return peewee.SQL(_dialect_for(self.model._meta.database).sid_type)


def _user_path(user_key: Any) -> tuple[str, ...]:
    """The JSON path of a user_key ("user_id", "passport.user"): it goes into SQL as a literal, so only
    plain keys (letters, digits, _) joined by dots."""
    segments = user_key.split(".") if isinstance(user_key, str) else []
    if not segments or len(segments) > 8 or not all(_USER_KEY_SEGMENT.match(part) for part in segments):
        raise ValueError(
            'user_key must be a session key or a dotted path to a nested one ("user_id", '
            '"passport.user"): keys of letters, digits and _, at most 8 of them; not %.80r' % (user_key,)
        )
    return tuple(segments)


def _user_id_text(user_id: Any) -> str:
    """A user id as the user index holds it: a str as it is, an int as its decimal text."""
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise TypeError("a user id is a str or an int, not %.80r" % (user_id,))
    text = str(user_id)
    if "\x00" in text:
        raise ValueError("a user id can't hold a NUL character")
    if not 0 < len(text) <= MAX_USER_ID_LENGTH:
        raise ValueError("a user id has 1 to %d characters, not %d" % (MAX_USER_ID_LENGTH, len(text)))
    return text


class SessionDataField(peewee.Field):
    """`sess`: json on PostgreSQL and MySQL/MariaDB, text on SQLite; Python dicts in and out."""

    def ddl_datatype(self, ctx):
        return peewee.SQL(_dialect_for(self.model._meta.database).sess_type)

    def db_value(self, value):
        return None if value is None else _to_json(value)

    def python_value(self, value):
        if value is None or not isinstance(value, (str, bytes, bytearray)):
            return value  # decoded by the driver already (PostgreSQL's)
        return _session_from_json("(read through the model)", value)


class ExpiryField(peewee.Field):
    """`expired`: timestamptz on PostgreSQL, a UTC DATETIME on MySQL, ISO text on SQLite."""

    def ddl_datatype(self, ctx):
        return peewee.SQL(_dialect_for(self.model._meta.database).expired_type)

    def db_value(self, value):
        if value is None or not isinstance(value, datetime.datetime):
            return value
        return _dialect_for(self.model._meta.database).db_time(value)

    def python_value(self, value):
        return None if value is None else _expiry_from_db(value)


def build_session_model(db: Any, table_name: str = "sessions", sid_field_name: str = "sid") -> Any:
    """A peewee model of the session table: `sid` (its column named sid_field_name), `sess`, `expired`."""
    _check_identifier(table_name, "table_name", _MAX_IDENTIFIER - len(_INDEX_SUFFIX))
    _check_identifier(sid_field_name, "sid_field_name")
    attrs = {
        "sid": SessionIdField(max_length=MAX_SID_LENGTH, primary_key=True, column_name=sid_field_name),
        "sess": SessionDataField(),
        "expired": ExpiryField(),
        "Meta": type("Meta", (), {"database": db, "table_name": table_name}),
        "__module__": __name__,
    }
    model: Any = type("Session_" + table_name, (peewee.Model,), attrs)
    # Named explicitly: peewee derives index names from the class name, which two stores may share.
    model.add_index(peewee.ModelIndex(model, (model.expired,), name=table_name + _INDEX_SUFFIX))
    return model


# -- The store -------------------------------------------------------------------------------


class StoredSession(NamedTuple):
    """A session as its row holds it: the data ("cookie" included), when the row expires, and a token
    (the row's text) by which a later save() finds out whether another request wrote the row since."""

    data: dict
    expires: datetime.datetime
    token: str


class _Connection:
    """Opens this thread's connection when it has none, and on exit closes only what it opened.

    A database error raised in the block (the store's own statements) leaves as this library's
    (see _translated), but for what `passing` names: an exception, or a class of them.
    """

    __slots__ = ("db", "discard", "opened", "passing")

    def __init__(
        self, db: peewee.Database, discard: bool = False, passing: Union[BaseException, type, None] = None
    ) -> None:
        self.db: Any = db  # a pooled one has manual_close()
        self.opened = False
        self.discard = discard  # close a pooled connection rather than return it to the pool
        self.passing = passing

    def open(self) -> None:
        # is_closed() is this thread's own state; connect() would take the database-wide lock.
        if not self.opened and self.db.is_closed():
            try:
                self.opened = self.db.connect(reuse_if_open=True)
            except (peewee.DatabaseError, peewee.InterfaceError) as exc:
                raise _translated(exc) from exc
            except MaxConnectionsExceeded as exc:  # a ValueError: every connection of the pool is in use
                raise SessionStoreUnavailable(
                    "no free connection in the session database's pool: %s" % exc
                ) from exc
            except (TypeError, ValueError, AttributeError, KeyError) as exc:  # PyMySQL's, for charset="nope"
                raise _refused_settings(exc) from exc

    def close(self) -> None:
        if self.opened:
            self.opened = False
            try:
                if self.discard and isinstance(_database_of(self.db), PooledDatabase):
                    self.db.manual_close()
                else:
                    self.db.close()
            except (peewee.DatabaseError, peewee.InterfaceError):
                pass  # a connection the server already dropped: it is gone either way

    def __enter__(self) -> "_Connection":
        self.open()
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], traceback: Any) -> None:
        self.close()
        passing = self.passing
        if exc is None or exc is passing or (isinstance(passing, type) and isinstance(exc, passing)):
            return
        translated = _translated(exc)
        if translated is not exc:
            raise translated from exc


def _refused_settings(exc: Exception) -> SessionStoreError:
    """A driver's own exception for a connection setting it can't use (an unknown one, a bad value)."""
    return SessionStoreError(
        "the session database's driver refused its connection settings: %s: %s"
        % (type(exc).__name__, _first_line(exc))
    )


class _Spares:
    """The connections of a store's own database whose threads ended, for the next threads to take.

    A server may start a thread per request (or a greenlet): each would otherwise connect anew.
    At most _MAX_SPARES are kept (the rest closed), so they stay as many as the threads that ran at once.
    """

    __slots__ = ("connections", "lock")

    def __init__(self) -> None:
        self.connections: list[Any] = []
        self.lock = threading.Lock()

    def put(self, connection: Any) -> None:
        with self.lock:
            if len(self.connections) < _MAX_SPARES:
                self.connections.append(connection)
                return
        try:
            connection.close()
        except Exception:
            pass  # one the server dropped: gone either way

    def take(self) -> Any:
        with self.lock:
            return self.connections.pop() if self.connections else None

    def after_fork(self) -> None:
        self.lock = threading.Lock()
        _FORK_ORPHANS.extend(self.connections)  # the parent's sockets: never used nor closed here
        self.connections = []


_MAX_SPARES = 16


class _Keeper:
    """Held beside a thread's connection in its state: when the thread ends and its state goes, this
    hands the connection to the spares instead of letting it close. Disarmed when the connection is
    closed or replaced on purpose."""

    __slots__ = ("connection", "pid", "spares")

    def __init__(self, connection: Any, spares: _Spares) -> None:
        self.connection, self.spares, self.pid = connection, spares, os.getpid()

    def __del__(self) -> None:
        connection, self.connection = self.connection, None
        if connection is None:
            return
        try:
            if self.pid == os.getpid():
                self.spares.put(connection)
            else:  # a forked child freeing its parent's thread states
                _FORK_ORPHANS.append(connection)
        except Exception:
            pass  # at interpreter exit: the connection closes as it goes


class _OwnState(peewee._ConnectionLocal):
    """peewee's per-thread connection state, for a store's own database: see _Keeper and _Spares."""

    keeper: Optional["_Keeper"]

    def __init__(self, spares: _Spares) -> None:
        self.spares = spares  # set in each thread (threading.local calls __init__ again there)
        super().__init__()

    def reset(self) -> None:
        keeper = getattr(self, "keeper", None)
        if keeper is not None:
            keeper.connection = None
        super().reset()
        self.keeper = None

    def set_connection(self, conn: Any) -> None:
        super().set_connection(conn)
        self.keeper = _Keeper(conn, self.spares)

    def adopt_spare(self) -> None:
        """Take a spare connection when this thread has none (it may be dead: _run finds out)."""
        if self.closed:
            spare = self.spares.take()
            if spare is not None:
                self.set_connection(spare)


class _NoConnection:
    __slots__ = ()

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass


_NO_CONNECTION = _NoConnection()


_DEFAULT = object()  # an option left out


class PeeweeSessionStore:
    """Sessions in a SQL table, with express-session's store semantics.

    `db` is any peewee database (SQLite, PostgreSQL, MySQL/MariaDB, pooled or
    behind a DatabaseProxy); None means SQLite in ./peewee_sessions.sqlite (WAL).
    The table (connect-session-knex's schema) is created when missing unless
    create_table=False. Expired rows are swept every `sweep_interval` seconds
    (connect-session-knex calls it `clear_interval`, also accepted) on a daemon
    timer started on first use; 0 or None disables it.

    `user_key` names the session key that holds the signed-in user's id: a top-level
    key ("user_id") or a dotted path to a nested one ("passport.user", where Passport.js
    keeps it). With it, the table gets an index on that value (`<table>_user_index`,
    read from the JSON by the database, so sessions Node writes are covered; on
    MySQL/MariaDB through a virtual column `sess_user`), made with the table or added
    to an existing one when create_table is true, and sessions_of() and
    destroy_sessions_of() find a user's sessions through it. A user id is a str or an
    int of at most 255 characters, compared as text (42 and "42" are one user); any
    other value (a bool, a float, null, an object) is no user. Without it the schema
    is exactly connect-session-knex's.
    """

    def __init__(
        self,
        db: Optional[peewee.Database] = None,
        *,
        table_name: str = "sessions",
        sid_field_name: str = "sid",
        create_table: bool = True,
        sweep_interval: Optional[float] = 60.0,
        clear_interval: Any = _DEFAULT,
        on_cleanup_error: Optional[Callable[[Exception], Any]] = None,
        sweep_batch_size: int = 1000,
        max_session_size: Optional[int] = 1 << 20,
        user_key: Optional[str] = None,
    ) -> None:
        self.user_key = user_key
        self._user_path = () if user_key is None else _user_path(user_key)  # before anything is made
        self._owns_db = db is None
        if db is None:
            # Pooled: reopening SQLite per request re-runs the pragmas and checkpoints the WAL each time.
            db = PooledSqliteDatabase(
                DEFAULT_SQLITE_FILE,
                pragmas={"journal_mode": "wal", "synchronous": "normal"},
                timeout=10,
                check_same_thread=False,
                max_connections=None,
            )
        self.db: Any = db  # any peewee database, or a DatabaseProxy
        _check_database(db)
        self.model = build_session_model(db, table_name, sid_field_name)
        self.table_name = table_name
        self.sid_field_name = sid_field_name
        self.create_table = create_table
        self.max_session_size = max_session_size
        self.sweep_batch_size = int(sweep_batch_size)
        if self.sweep_batch_size < 1:
            raise ValueError("sweep_batch_size must be at least 1")
        if clear_interval is not _DEFAULT:
            sweep_interval = clear_interval
        self._sweeper = _Sweeper(self, sweep_interval, on_cleanup_error)
        self._lock = threading.Lock()
        self._dialect: Optional[_Dialect] = None
        # The store's own connection per thread (see _run), and the database it copies.
        self._own_db: Any = None
        self._own_source: Optional[peewee.Database] = None
        # A DatabaseProxy may be initialized after the store is made, and a server may
        # be down while the app starts: then the table is checked on first use instead.
        if not isinstance(db, peewee.DatabaseProxy) or db.obj is not None:
            try:
                self._prepare()
            except SessionStoreUnavailable as exc:
                logger.warning("%s; the session table will be checked on first use", exc)

    # The table and its dialect, once per store.

    @property
    def dialect(self) -> _Dialect:
        """The SQL and hooks for this store's table on its database (made on first use)."""
        return self._dialect or self._prepare()

    def _prepare(self) -> _Dialect:
        with self._lock:
            if self._dialect is None:
                dialect_class = _dialect_for(self.db)
                # Closed for good, not put back in a pool: a store made in a process that forks its
                # workers (gunicorn --preload) would leave them all one shared socket.
                with _Connection(self.db, discard=True):
                    source = _database_of(self.db)
                    dialect = dialect_class.for_server(source, self.table_name, self.sid_field_name)
                    self._ensure_table()  # not on a server the store refuses
                    dialect.for_table(self.db, self.table_name, self.sid_field_name)
                    if self._user_path:
                        dialect.use_user_key(self._user_path)
                        self._ensure_user_index(dialect)
                self._own_db, self._own_source = dialect.own_database(source), source
                self._dialect = dialect
            return self._dialect

    def _ensure_table(self) -> None:
        if self.db.table_exists(self.table_name):
            return
        if not self.create_table:
            raise TableMissingError(
                "the session table %r does not exist; create it (see `sql` in the README) "
                "or pass create_table=True" % self.table_name
            )
        try:
            self.model.create_table(safe=True)
        except peewee.DatabaseError:
            # Another process may have created it at the same moment.
            if not self.db.table_exists(self.table_name):
                raise

    def _ensure_user_index(self, dialect: _Dialect) -> None:
        found = dialect.user_index_found(self.db, self._user_path)
        if found:
            return
        if found is not None:
            raise UserKeyError(
                "the index %s of table %r is on another key than user_key=%r: drop it (on MySQL/MariaDB, "
                "and its column sess_user) and the store remakes it"
                % (dialect.user_index_name, self.table_name, self.user_key)
            )
        if not self.create_table:
            raise TableMissingError(
                "the session table %r has no index %s, which user_key=%r needs: add it with "
                "`peewee-sessions --db URL --table %s create-table --user-key %s` (or print it with "
                "`sql --user-key`), or make "
                "the store with create_table=True"
                % (self.table_name, dialect.user_index_name, self.user_key, self.table_name, self.user_key)
            )
        try:
            for statement in dialect.user_index:
                self.db.execute_sql(statement)
        except peewee.DatabaseError:
            if not dialect.user_index_found(self.db, self._user_path):  # another process made it meanwhile?
                raise

    def connection(self) -> _Connection:
        """A context that opens the app's database connection if this thread has none, and closes only
        what it opened (the store's own statements outside a transaction use a connection of its own)."""
        return _Connection(self.db, passing=BaseException)  # what the caller's block raises is the caller's

    def request_connection(self) -> Any:
        """What a request's Session opens before its statements and closes at its end: the app's
        connection where the store has none of its own, else a context that does nothing."""
        prepared = self.dialect  # and with it whether the store has its own connections
        return _NO_CONNECTION if prepared and self._own_db is not None else self.connection()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A transaction on this thread's connection (joining the app's own, if one is open).

        On SQLite it takes the write lock first (BEGIN IMMEDIATE), as it has no row locks. A
        conflict with another transaction (see SessionConflict) rolls it back and raises
        SessionConflict: the store cannot run the block again.
        """
        connection = _Connection(self.db)
        with connection, self.db.atomic(*self.dialect.atomic_args):
            try:
                yield
            except BaseException as exc:
                connection.passing = (
                    exc  # raised by the block (the app's own queries too): not ours to translate
                )
                raise
            connection.passing = (
                peewee.IntegrityError
            )  # at COMMIT, only the app's deferred constraints can fail

    def _execute(self, sql: str, params: tuple, fetch: Optional[str] = None) -> Any:
        """Run one statement: the cursor, or its fetchone()/fetchall().

        In the app's transaction when this thread has one open (transaction() and locked() among
        them), so that it commits or rolls back with it; else on the store's own connection (_run).
        A statement of its own (not in a transaction) that lost a conflict changed nothing, and is
        run again (see _retrying).
        """
        self._sweeper.start_if_needed()
        try:  # the first attempt outside _retrying's loop: this runs twice a request, a conflict rarely
            return self._execute_once(sql, params, fetch)
        except SessionConflict:
            if self.db.in_transaction() or CONFLICT_ATTEMPTS < 2:
                raise  # the app's transaction is doomed: its owner decides; or no attempt is left
        for attempt in _retrying(self.db, failed=1):
            with attempt:
                return self._execute_once(sql, params, fetch)
        raise AssertionError("unreachable: the last attempt raises")

    def _execute_once(self, sql: str, params: tuple, fetch: Optional[str]) -> Any:
        db, own = self.db, self._own_db
        if own is None or db.in_transaction() or _database_of(db) is not self._own_source:
            with _Connection(db):
                cursor = db.execute_sql(sql, params)
                return cursor if fetch is None else getattr(cursor, fetch)()
        return self._run(own, sql, params, fetch)

    def _run(self, own: Any, sql: str, params: tuple, fetch: Optional[str]) -> Any:
        """Run one statement on this thread's own connection of the store, opened on first use and kept.

        Kept as Django keeps its persistent connections: a request then makes no round trip of its
        own (no connect, nor a pool's check-out ping and check-in ROLLBACK). A connection the server
        dropped (a restart, an idle timeout, a KILL) is replaced and the statement run again, once:
        every statement of the store outside a transaction gives the same result when repeated.
        """
        for attempt in (1, 2):
            connection = None
            try:
                own._state.adopt_spare()
                connection = own.connection()  # opens it when this thread has none
                cursor = own.execute_sql(sql, params)
                return cursor if fetch is None else getattr(cursor, fetch)()
            except (peewee.DatabaseError, peewee.InterfaceError) as exc:
                lost = connection is not None and self.dialect.lost(connection, exc)
                if lost:
                    try:
                        own.close()
                    except (peewee.DatabaseError, peewee.InterfaceError):
                        pass  # gone either way
                if not lost or attempt == 2:
                    raise _translated(exc) from exc
                logger.info(
                    "the session database dropped this thread's connection (%s); reconnecting",
                    str(exc).strip(),
                )

    # express-session's store API.

    def get(self, sid: str) -> Optional[dict]:
        """The stored session, or None when it is missing, expired or damaged."""
        found = self.load(sid)
        return None if found is None else found.data

    def get_with_expiry(self, sid: str) -> Optional[tuple[dict, datetime.datetime]]:
        """(session, expiry as an aware UTC datetime), or None like get()."""
        found = self.load(sid)
        return None if found is None else (found.data, found.expires)

    def load(self, sid: str, for_update: bool = False) -> Optional[StoredSession]:
        """The live session with its expiry and token, or None like get().

        for_update locks the row until the transaction ends (inside transaction()).
        """
        _check_sid(sid)
        dialect = self.dialect
        row = self._execute(
            dialect.get_for_update if for_update else dialect.get, (sid, dialect.now()), "fetchone"
        )
        if row is None:
            return None
        sess = _session_from_json(sid, row[0])
        expiry = _checked_expiry(sid, row[1])
        return None if sess is None or expiry is None else StoredSession(sess, expiry, row[0])

    def set(self, sid: str, sess: dict) -> None:
        """Insert or replace a session, in one statement. Its expiry comes from sess['cookie']."""
        _check_sid(sid)
        _check_session(sess)
        expires = _expiry_of(sess, _utcnow())
        cookie = sess.get("cookie")
        if isinstance(cookie, dict) and isinstance(cookie.get("expires"), datetime.datetime):
            sess = dict(
                sess, cookie=dict(cookie, expires=_iso_z(cookie["expires"]))
            )  # as a JS Date serializes
        self._write(sid, _to_json(sess), expires)

    def _write(self, sid: str, text: str, expires: datetime.datetime) -> None:
        """set() for a session already encoded as JSON text."""
        dialect = self.dialect
        self._check_storable(sid, text)
        self._execute(dialect.set, dialect.set_params(sid, text, dialect.db_time(expires)))

    def save(
        self,
        sid: str,
        text: str,
        changes: dict[str, str],
        removed: Iterable[str],
        expires: datetime.datetime,
        token: Optional[str],
    ) -> Optional[str]:
        """Save a session as one request changed it; returns the new token, or None when the row is gone.

        `text` is the whole session as JSON, `changes` the JSON of each key the request set
        ("cookie" among them when it changed the session's lifetime), `removed` the keys it
        deleted, and `token` what load() or the last save() returned (None: a session the
        store doesn't hold yet, which is inserted). When the row still holds `token`, nobody
        wrote it since: the whole text replaces it, in one UPDATE. Otherwise the changes are
        merged into the row as it is now, under its lock, so what other requests wrote to
        other keys (and to the lifetime) stays. A row that is gone, destroyed or expired
        meanwhile, is never brought back.
        """
        _check_sid(sid)
        self._check_storable(sid, text)
        dialect = self.dialect
        if token is None:
            self._write(sid, text, expires)
            return text
        if token:
            params = (text, dialect.db_time(expires), sid, dialect.now(), token)
            if self._execute(dialect.replace_if_unchanged, params).rowcount > 0:
                return text
        merged = self._merge(sid, changes, removed, expires if "cookie" in changes else None)
        return None if merged is None else ""  # "": the row holds keys this request hasn't seen: merge again

    def patch(self, sid: str, changes: dict[str, Any], removed: Iterable[str] = ()) -> bool:
        """Set some top-level keys of a live session and remove others, leaving the rest as stored.

        The row is read and rewritten under its lock (as in locked()), so concurrent patches
        of different keys all survive; the merged session is checked as set() checks one, and a
        value that cannot be stored or a session over max_session_size raises and leaves the
        row as it was. A "cookie" in changes also moves the expiry. Never creates or revives a
        row: returns False when there is no live one.
        """
        _check_sid(sid)
        encoded = {
            _object_key(key): _to_json(value, key) for key, value in changes.items()
        }  # before any query
        cookie = changes.get("cookie")
        expires = _expiry_of(changes, _utcnow()) if isinstance(cookie, dict) else None
        return self._merge(sid, encoded, removed, expires) is not None

    def _merge(
        self, sid: str, changes: dict[str, str], removed: Iterable[str], expires: Optional[datetime.datetime]
    ) -> Optional[str]:
        """Merge encoded changes into the live row under its lock: the merged text, or None when it is gone.

        The expiry moves only when `expires` is given (the lifetime changed); else it stays as stored.
        """
        gone = set(removed) - changes.keys()
        for attempt in _retrying(self.db):  # the whole read-merge-write again, after a conflict
            with attempt, self.transaction():
                found = self.load(sid, for_update=True)
                if found is None:
                    return None
                members = {
                    key: changes[key] if key in changes else _to_json(value, key)
                    for key, value in found.data.items()
                    if key not in gone
                }
                members.update(changes)  # a new key goes last; a changed one keeps its place
                text = _json_object(members)
                self._write(sid, text, found.expires if expires is None else expires)
                return text  # once committed: a conflict at COMMIT goes round again
        raise AssertionError("unreachable: the last attempt raises")

    def touch(self, sid: str, sess: dict, token: Optional[str] = None) -> None:
        """Move a live session's expiry to what sess['cookie'] says; never creates or revives a row.

        With a token (from load() or save()), only if nobody wrote the row since: a request that
        wrote it set its expiry then, from a lifetime that may not be this one's any more.
        """
        _check_sid(sid)
        _check_session(sess)
        dialect, now = self.dialect, _utcnow()
        expires = dialect.db_time(_expiry_of(sess, now))
        if token:
            self._execute(dialect.touch_if_unchanged, (expires, sid, dialect.db_time(now), token))
        else:
            self._execute(dialect.touch, (expires, sid, dialect.db_time(now)))

    @contextlib.contextmanager
    def locked(self, sid: str) -> Iterator[Optional[tuple[dict, datetime.datetime]]]:
        """A transaction holding the session's row lock (SQLite: the write lock).

        Yields what get_with_expiry() would, read under the lock; what the block
        writes with set() or patch() commits when it ends, so a read-modify-write
        inside it cannot lose a concurrent update.
        """
        _check_sid(sid)
        with self.transaction():
            found = self.load(sid, for_update=True)
            yield None if found is None else (found.data, found.expires)

    def destroy(self, sid: str) -> int:
        """Delete a session; returns how many rows went (0 or 1)."""
        _check_sid(sid)
        return self._execute(self.dialect.destroy, (sid,)).rowcount

    # A user's sessions (user_key): each device they are signed in on.

    def sessions_of(self, user_id: Union[str, int]) -> dict[str, dict]:
        """Every live session of a user, by id, each as get() returns it (cookie.expires: when it ends).

        Found through the user index (see user_key); raises UserKeyError when the store has no user_key.
        """
        dialect, user = self._user_query(user_id)
        rows = self._execute(dialect.sessions_of, (user, dialect.now()), "fetchall")
        found = {}
        for sid, raw, expiry in rows:
            sess = _session_from_json(sid, raw)
            if sess is not None and _checked_expiry(sid, expiry) is not None:
                found[sid] = sess
        return found

    def destroy_sessions_of(self, user_id: Union[str, int], keep: Optional[str] = None) -> int:
        """Delete every row of a user (expired ones too) but `keep` (a session id: the current request's
        session.id, say), in one statement; returns how many rows went.

        A session of the user that a request is saving at the same moment is not brought back: save()
        only updates a row that is still there. Raises UserKeyError when the store has no user_key.
        """
        if keep is not None:
            _check_sid(keep)
        dialect, user = self._user_query(user_id)
        return self._execute(dialect.destroy_sessions_of, (user, "" if keep is None else keep)).rowcount

    def _user_query(self, user_id: Any) -> tuple[_Dialect, str]:
        if not self._user_path:
            raise UserKeyError(
                "this store has no user_key: pass PeeweeSessionStore(..., "
                'user_key="user_id") (the session key that holds the user\'s id) '
                "to find sessions by user"
            )
        return self.dialect, _user_id_text(user_id)

    def length(self) -> int:
        """How many live sessions there are (also len(store))."""
        dialect = self.dialect
        return self._execute(dialect.length, _live_window(dialect.db_time), "fetchone")[0]

    __len__ = length

    def all(self) -> dict[str, dict]:
        """Every live session, by id (damaged rows are logged and left out)."""
        dialect = self.dialect
        rows = self._execute(dialect.all, _live_window(dialect.db_time), "fetchall")
        sessions = (
            (sid, _session_from_json(sid, raw) if _checked_expiry(sid, expiry) else None)
            for sid, raw, expiry in rows
        )
        return {sid: sess for sid, sess in sessions if sess is not None}

    def clear(self) -> int:
        """Delete every session, live or not; returns how many rows went."""
        return self._execute(self.dialect.clear, ()).rowcount

    def sweep(self) -> int:
        """Delete the expired sessions now, in batches; returns how many rows went."""
        return sum(self.sweep_batches())

    def sweep_batches(self) -> Iterator[int]:
        """Delete expired sessions one batch (a short statement) at a time, yielding each batch's count.

        A batch starts at sweep_batch_size rows; one that takes over 50 ms halves the next (down
        to 50 rows) and one under 10 ms doubles it again, so no statement holds its locks for
        long however slow the database's disk is. After each batch the sweep rests twice as long as the
        batch took: it never keeps the database busy more than a third of the time, so
        requests served meanwhile barely notice it. A backlog on MySQL/MariaDB is deleted in key
        order (_KeyOrderSweep), on PostgreSQL in page order (_PageOrderSweep), whose last steps read
        the index and yield 0.
        """
        largest = self.sweep_batch_size
        batch, smallest = largest, min(largest, 50)
        sweep_one = self.dialect.sweeper(self)
        with _Connection(self.db):
            while True:
                started = time.perf_counter()
                count, more = sweep_one(batch)
                took = time.perf_counter() - started
                yield count
                if not more:
                    return
                if took > SWEEP_SLOW_BATCH_S:
                    batch = max(smallest, batch // 2)
                elif took < SWEEP_SLOW_BATCH_S / 5:
                    batch = min(largest, batch * 2)
                time.sleep(took * SWEEP_REST_RATIO)

    def stats(self) -> dict[str, Any]:
        """Live and expired counts, the soonest and latest live expiry, and the table's size in bytes."""
        dialect = self.dialect
        with _Connection(self.db):
            live, soonest, latest = self.db.execute_sql(
                dialect.live_stats, _live_window(dialect.db_time)
            ).fetchone()
            expired = self.db.execute_sql(dialect.expired_count, (dialect.now(),)).fetchone()[0]
            size = dialect.table_bytes(self.db, self.table_name)
        return {
            "live": live,
            "expired": expired,
            "soonest_expiry": None if soonest is None else _checked_expiry("(stats)", soonest),
            "latest_expiry": None if latest is None else _checked_expiry("(stats)", latest),
            "table_bytes": size,
        }

    def _check_storable(self, sid: str, data: str) -> None:
        """Refuse, before any statement, a session JSON text this table would refuse or should not hold."""
        if self.max_session_size is not None and len(data) > self.max_session_size:
            raise ValueError(
                "session %.8s... is %d bytes of JSON, over max_session_size (%d)"
                % (sid, len(data), self.max_session_size)
            )
        _check_depth(data)
        self.dialect.check_storable(sid, data)

    def close(self) -> None:
        """Stop the sweeper and close this thread's own connection of the store and its spares (and the
        database if the store made it and no sweep still uses it). Other threads' own connections are
        closed as those threads end, or kept as spares for others."""
        own = self._own_db
        if own is not None:
            with contextlib.suppress(peewee.DatabaseError, peewee.InterfaceError):
                own.close()
            while True:
                spare = own._state.spares.take()
                if spare is None:
                    break
                try:
                    spare.close()
                except Exception:
                    pass  # one the server dropped: gone either way
        if self._sweeper.stop() and self._owns_db:
            self.db.close_all()

    def __enter__(self) -> "PeeweeSessionStore":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<PeeweeSessionStore %s on %s>" % (self.table_name, type(_database_of(self.db)).__name__)


# A statement or transaction that lost a conflict is run at most this many times in all, after a
# random pause of up to CONFLICT_PAUSE_S doubling each time (two writers that collided would
# otherwise collide again).
CONFLICT_ATTEMPTS = 5
CONFLICT_PAUSE_S = 0.005


class _Attempt:
    """One try of _retrying: a context that lets a SessionConflict through only on the last try."""

    __slots__ = ("failed", "last")

    def __init__(self, last: bool) -> None:
        self.last, self.failed = last, False

    def __enter__(self) -> "_Attempt":
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], traceback: Any) -> bool:
        self.failed = isinstance(exc, SessionConflict) and not self.last
        return self.failed  # swallowed: the caller's loop tries again


def _retrying(db: peewee.Database, attempts: int = CONFLICT_ATTEMPTS, failed: int = 0) -> Iterator[_Attempt]:
    """`for attempt in _retrying(db): with attempt: ...`: the block again after a SessionConflict.

    Inside a transaction that is not the block's own (the app's), a conflict has rolled back or
    doomed more than the block: it is raised at once, for whoever owns the transaction.
    `failed`: attempts the caller already made and lost, outside the loop (outside any
    transaction); the loop goes on from there, after the pause that follows them.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1, not %r" % (attempts,))
    if db.in_transaction():
        attempts = 1
    if failed >= attempts:
        raise ValueError("%d of %d attempts failed already: the caller raises the last" % (failed, attempts))
    for number in range(failed, attempts):
        if number:
            time.sleep(random.uniform(0, CONFLICT_PAUSE_S * 2 ** (number - 1)))
        attempt = _Attempt(last=number == attempts - 1)
        yield attempt
        if not attempt.failed:
            return


def create_table_sql(
    db: Any, table_name: str = "sessions", sid_field_name: str = "sid", user_key: Optional[str] = None
) -> list:
    """The CREATE TABLE and CREATE INDEX statements for a database (or a dialect name), without running them.

    With a user_key, then the statement(s) adding its user index (see PeeweeSessionStore).
    """
    if isinstance(db, str):
        if db not in _DIALECT_NAMES:
            raise ValueError("dialect must be one of %s, not %r" % (", ".join(_DIALECT_NAMES), db))
        db = _DIALECT_NAMES[db](None)  # an uninitialized database: enough to write its SQL
    path = () if user_key is None else _user_path(user_key)
    model = build_session_model(db, table_name, sid_field_name)
    queries = [model._schema._create_table(safe=True), *model._schema._create_indexes(safe=True)]
    statements = [_database_of(db).get_sql_context().sql(query).query()[0] for query in queries]
    if path:
        dialect = _dialect_for(db)(_database_of(db), table_name, sid_field_name)
        dialect.use_user_key(path)
        statements += dialect.user_index
    return statements


# -- Sweeping --------------------------------------------------------------------------------

# The sweep's pacing (see sweep_batches): a batch slower than this halves the next, and after
# each batch the sweep rests this many times as long as it took.
SWEEP_SLOW_BATCH_S = 0.05
SWEEP_REST_RATIO = 2.0
# close() waits at most this long for a sweep under way to finish its batch.
SWEEP_STOP_WAIT_S = 5.0
# MySQL/MariaDB: a key-order sweep (_KeyOrderSweep) goes on while this share of each window is expired.
SWEEP_WALK_MIN_SHARE = 0.25
# PostgreSQL: a page-order sweep (_PageOrderSweep) reads windows of this many pages at first and at most,
# and samples this many expiries of each window's deleted rows.
SWEEP_FIRST_WINDOW_PAGES = 8
SWEEP_MAX_WINDOW_PAGES = 1024
SWEEP_WINDOW_SAMPLE = 16


def _sweep_in_expiry_order(store: PeeweeSessionStore, size: int) -> tuple[int, bool]:
    """One batch, one statement: (rows deleted, whether more may be expired)."""
    dialect = store.dialect
    count = store.db.execute_sql(dialect.sweep_batch, (dialect.now(), size)).rowcount
    return count, count == size


class _KeyOrderSweep:
    """MySQL/MariaDB's sweep: keys read without locks, then their rows deleted by key, in key order.

    InnoDB keeps rows in key order, and session ids are random, so rows taken in expiry order
    each sit on a page of their own: over a long sweep every page would be read, changed and
    written again once per expired row it holds. So a backlog (a first read of expired keys that
    comes back full) is walked in key order instead: each batch reads a window of `size`
    consecutive keys (a few pages) and deletes its expired rows, while at least
    SWEEP_WALK_MIN_SHARE of a window is expired. Otherwise, and after the walk, a batch reads
    expired keys from the expired index. Either way the DELETE names its keys and re-checks
    their expiry, so it locks only the rows it names, which were expired when read (not the live
    sessions around them), in key order (concurrent sweepers wait rather than deadlock); and it
    has no LIMIT, so statement-based replication can replay it.
    """

    __slots__ = ("cursor", "db", "sql", "walked", "walking")

    def __init__(self, db: peewee.Database, sql: "_MysqlDialect") -> None:
        self.db, self.sql = db, sql
        self.walking = self.walked = False  # a sweep walks at most once
        self.cursor: Optional[str] = None  # the last key the walk has read; None: the start of the table

    def step(self, size: int) -> tuple[int, bool]:
        """One batch of at most `size` rows: (rows deleted, whether more may be expired)."""
        now = self.sql.now()
        if not self.walking:
            count, keys, _ = self._read_keys(self.sql.sweep_expired_keys, (now, size))
            if count < size or self.walked:
                deleted = self._delete(keys, now)
                # In a transaction reads see its snapshot: keys another sweeper deleted would come back.
                return deleted, count == size and deleted > 0
            self.walking = self.walked = True  # a backlog: those rows sit on as many pages; walk instead
        keys, more = self._next_window(now, size)
        return self._delete(keys, now), more

    def _next_window(self, now: Any, size: int) -> tuple[list[str], bool]:
        after = () if self.cursor is None else (self.cursor,)
        count, keys, last = self._read_keys(self.sql.sweep_window[bool(after)], (now, *after, size))
        expired = [key for key in keys if key is not None]
        if count < size:  # the end of the table; what expired behind the walk is the next sweep's
            return expired, False
        self.cursor = last
        if len(expired) < size * SWEEP_WALK_MIN_SHARE:
            self.walking = False  # mostly live keys here: the expired index finds the rest for less
        return expired, True

    def _read_keys(self, sql: str, params: tuple) -> tuple[int, list, Optional[str]]:
        """A read's count of keys, the keys (None for a window's live ones) and the last key in key order."""
        count, array, last = self.db.execute_sql(sql, params).fetchone()
        try:
            keys = json.loads(array) if count else []  # JSON_ARRAYAGG of no rows is NULL
        except (TypeError, ValueError):  # NULL or cut short: past max_allowed_packet, say
            keys = None
        if not isinstance(keys, list) or len(keys) != count:
            raise peewee.DatabaseError(
                "the server's list of the sweep's %d keys came back damaged or cut short "
                "(max_allowed_packet?): lower sweep_batch_size" % count
            )
        return count, keys, last

    def _delete(self, keys: list[str], now: Any) -> int:
        if not keys:
            return 0
        return self.db.execute_sql(self.sql.delete_expired_keys(len(keys)), [now, *keys]).rowcount


class _PageOrderSweep:
    """PostgreSQL's sweep: batches in expiry order, but a backlog walked a window of pages at a time.

    A table's rows sit in its pages in the order they were written, not the order they expire, so
    over a backlog the rows of an expiry-order batch each sit on a page of their own: every page
    would be read, changed and written back once per expired row it holds, and again after each
    time it is evicted (random writes of many times the table's size). So when a first batch comes
    back full, the sweep walks the pages instead (TID range scans, PostgreSQL 14+): each statement
    deletes the expired rows of a window of consecutive pages, sized to hold about a batch, and
    locks only those rows (at most a batch), skipping any another sweeper holds. The walk goes on
    while it has deleted, in all, at least a row for each page it has read, so it never reads more
    pages than expiry order would have touched for the same rows; else batches go on in expiry
    order. It ends at the last page the table had when it began: what expires behind it is the
    next sweep's.

    The deleted rows keep their entries in the expired index until (auto)vacuum, and the next
    expiry-order batch would step over them all in one statement, visiting each one's page (seconds
    for a million). So a walk that reaches the end goes on to read the index over the expiries it
    deleted, a slice of about a batch of its entries per statement (cut where a sample of those
    expiries says, so it holds however they are spread; entries of one expiry can't be split). An
    index scan marks the entries it steps over whose rows are gone for every transaction, and later
    scans skip those for almost nothing. (With an older snapshot open, a long transaction say, it
    can mark nothing, and the next sweep steps over them as before.)
    """

    __slots__ = (
        "deleted",
        "end",
        "page",
        "sample",
        "slice_from",
        "store",
        "walked",
        "walking",
        "window",
        "windows",
    )

    def __init__(self, store: PeeweeSessionStore) -> None:
        self.store = store
        self.walking = self.walked = False  # a sweep walks at most once
        self.page = self.end = 0  # the walk's next page, and the page it stops before
        self.window = SWEEP_FIRST_WINDOW_PAGES
        self.windows = self.deleted = 0  # statements and rows of the walk so far
        # The walk's sample of the expiries it deleted: (expiry, how many rows it stands for), and,
        # once it is done, where the next slice of the index starts (None: no slices left).
        self.sample: list[tuple[datetime.datetime, float]] = []
        self.slice_from: Optional[datetime.datetime] = None

    def step(self, size: int) -> tuple[int, bool]:
        """About `size` rows (or index entries) of work: (rows deleted, whether more may follow)."""
        if self.walking:
            return self._next_window(size)
        if self.slice_from is not None:
            return self._next_index_slice(size)
        count, more = _sweep_in_expiry_order(self.store, size)
        if more and not self.walked:
            self.walked = True  # a backlog: walk it, if this server can
            sql = cast(_PostgresqlDialect, self.store.dialect)
            self.end = (
                self.store.db.execute_sql(sql.table_pages, (self.store.table_name,)).fetchone()[0] or 0
            )
            self.walking = self.end > 0
        return count, more

    def _next_window(self, size: int) -> tuple[int, bool]:
        sql = cast(_PostgresqlDialect, self.store.dialect)
        first, end, now = self.page, min(self.page + self.window, self.end), sql.now()
        params = ("(%d,0)" % first, "(%d,0)" % end, now, size, now, self._sample_fractions())
        deleted, expiries = self.store.db.execute_sql(sql.sweep_pages, params).fetchone()
        if deleted:
            self._keep_sample(deleted, expiries)
        if deleted == size:  # the window held a batch or more: the rest of it next, in a smaller window
            self.window = max(1, self.window // 2)
            return deleted, True
        self.page = end
        # The next window: as many pages as held about `size` expired rows here, growing at most twofold.
        self.window = max(
            1, min(2 * self.window, SWEEP_MAX_WINDOW_PAGES, round(self.window * size / max(deleted, 1)))
        )
        if end == self.end:
            return deleted, self._start_index_slices()
        self.walking = (
            self.deleted >= end
        )  # else mostly live pages: the expired index finds the rest for less
        return deleted, True

    def _sample_fractions(self) -> list[float]:
        """Where to sample a window's deleted rows, as fractions of the way through them by expiry.

        The lowest and highest, and one every 1/SWEEP_WINDOW_SAMPLE of the rows between, from an
        offset that moves on by the golden ratio each window: windows whose rows are spread alike
        would otherwise all sample the same few expiries, and leave the index between them unsampled.
        """
        offset, self.windows = (self.windows * 0.6180339887) % 1, self.windows + 1
        return [0.0] + [(i + offset) / SWEEP_WINDOW_SAMPLE for i in range(SWEEP_WINDOW_SAMPLE)] + [1.0]

    def _keep_sample(self, deleted: int, expiries: list[str]) -> None:
        self.deleted += deleted
        lowest, *between, highest = [_parse_iso(expiry) for expiry in expiries]
        weight = deleted / SWEEP_WINDOW_SAMPLE  # the rows each one stands for
        self.sample += [(lowest, 0.0), (highest, 0.0)] + [(expiry, weight) for expiry in between]

    def _start_index_slices(self) -> bool:
        """The walk is done: its rows' index entries next, unless its deletes aren't committed (nothing to
        mark)."""
        self.walking = False
        if self.sample and not self.store.db.in_transaction():
            self.sample.sort(reverse=True)  # taken from the end: the lowest expiry first
            self.slice_from = self.sample.pop()[0]
        return self.slice_from is not None

    def _next_index_slice(self, size: int) -> tuple[int, bool]:
        """Read the expired index from slice_from over about `size` of the walk's entries (deletes none)."""
        first = last = self.slice_from
        entries = 0.0
        while self.sample and entries < size:
            last, rows = self.sample.pop()
            entries += rows
        self.store.db.execute_sql(
            cast(_PostgresqlDialect, self.store.dialect).index_slice, (first, last)
        ).fetchall()
        self.slice_from = last if self.sample else None
        return 0, self.slice_from is not None


class _Sweeper:
    """Deletes expired rows every `interval` seconds on a daemon threading.Timer.

    It starts on the store's first use in each process (so pre-forking servers
    work), jitters its interval so processes sharing a table don't sweep in
    lockstep, re-arms after every sweep whatever happened, and stops on close().
    """

    def __init__(
        self, store: PeeweeSessionStore, interval: Optional[float], on_error: Optional[Callable]
    ) -> None:
        if interval is not None and interval < 0:
            raise ValueError("sweep_interval must be a number of seconds (0 or None disables the sweeper)")
        self.store = store
        self.interval = interval or 0
        self.on_error = on_error or _log_sweep_error
        self.timer: Optional[threading.Timer] = None
        self._started = False
        self._stopped = False
        self._lock = threading.Lock()
        _SWEEPERS.add(self)

    def start_if_needed(self) -> None:
        if self._started or not self.interval or self._stopped:
            return  # the common case, on every store operation: no lock, no system call
        with self._lock:
            if not self._started and not self._stopped:
                self._started = True
                self._arm()

    def _arm(self) -> None:
        self.timer = threading.Timer(self.interval * random.uniform(0.9, 1.1), self._run)
        self.timer.daemon = True
        self.timer.name = "peewee-sessions sweeper (%s)" % self.store.table_name
        self.timer.start()

    def _run(self) -> None:
        try:
            deleted = 0
            for count in self.store.sweep_batches():
                deleted += count
                if self._stopped:  # close() waits for this: stop between batches
                    break
            logger.debug("swept %d expired sessions from %s", deleted, self.store.table_name)
        except Exception as exc:
            try:
                self.on_error(exc)
            except Exception:
                logger.exception("on_cleanup_error raised")
        finally:
            with self._lock:
                if not self._stopped:
                    self._arm()

    def stop(self) -> bool:
        """Cancel the next sweep; wait a while for one under way to end its batch and return its connection.

        Returns False when a sweep is still running (its batch outlasted SWEEP_STOP_WAIT_S).
        """
        with self._lock:
            self._stopped = True
            timer = self.timer
            if timer is not None:
                timer.cancel()
        if timer is None or timer is threading.current_thread():
            return True
        timer.join(SWEEP_STOP_WAIT_S)
        if timer.is_alive():
            logger.warning(
                "a sweep of %s is still running after %g s; it stops after its batch",
                self.store.table_name,
                SWEEP_STOP_WAIT_S,
            )
            return False
        return True

    def _after_fork(self) -> None:
        """In a forked child the timer thread is gone (and the lock may be held by it): start afresh."""
        self._lock = threading.Lock()
        self._started = False
        self.timer = None


_SWEEPERS: "weakref.WeakSet[_Sweeper]" = weakref.WeakSet()
# The stores' own databases (_Dialect.own_database), and the connections a forked child must never use
# nor close: closing one (psycopg2 tells the server goodbye) would end the parent's session on the server.
_OWN_DATABASES: "weakref.WeakSet[Any]" = weakref.WeakSet()
_FORK_ORPHANS: list[Any] = []


def _restart_sweepers_after_fork() -> None:
    for sweeper in list(_SWEEPERS):
        sweeper._after_fork()
    for own in list(_OWN_DATABASES):  # the forking thread's; the child's first statement opens its own
        if own._state.conn is not None:
            _FORK_ORPHANS.append(own._state.conn)
        own._state.reset()
        own._state.spares.after_fork()
        own._lock = threading.Lock()  # another thread of the parent may have held it


@atexit.register
def _stop_sweepers_at_exit() -> None:
    # A daemon thread still sweeping while the interpreter shuts down can crash the process.
    for sweeper in list(_SWEEPERS):
        sweeper.stop()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_sweepers_after_fork)


def _log_sweep_error(exc: Exception) -> None:
    logger.error("sweeping expired sessions failed: %s", exc, exc_info=exc)


# -- Cookie signing: express-session's "s:<sid>.<HMAC-SHA256>" ---------------------------------


def sign_session_id(sid: str, secret: str) -> str:
    """The cookie value express-session writes for a session id (before URL-encoding)."""
    if not secret:
        raise ValueError("a session cookie needs a non-empty secret to be signed with")
    mac = _keyed_mac(secret).copy()  # the key's own hashing done once, not on every request (twice)
    mac.update(sid.encode("utf-8", "surrogatepass"))
    return "s:%s.%s" % (sid, b64encode(mac.digest()).decode("ascii").rstrip("="))


@functools.lru_cache(maxsize=64)
def _keyed_mac(secret: str) -> "hmac.HMAC":
    return hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)


def unsign_session_id(value: str, secrets_: Union[str, Iterable[str]]) -> Optional[str]:
    """The session id in a signed cookie value, or None unless the secret (or one of them) signed it."""
    if isinstance(secrets_, str):
        secrets_ = (secrets_,)  # one secret, not one per character
    dot = value.rfind(".")
    if not value.startswith("s:") or dot < 2:
        return None
    sid = value[2:dot]
    presented = value.encode("utf-8", "surrogatepass")
    for secret in secrets_:
        # Compare the whole recomputed value in constant time, as cookie-signature does.
        if hmac.compare_digest(sign_session_id(sid, secret).encode("utf-8", "surrogatepass"), presented):
            return sid
    return None


_MAX_COOKIE_VALUE = (
    4096  # a browser's limit; a signed 255-character id fits even at 12 characters a character
)
_COOKIE_SPACE = " \t"  # what Node's `cookie` trims around names and values (not every Unicode space)


def _read_cookie(header: str, name: str) -> Optional[str]:
    """The first cookie `name` in a Cookie header, unquoted and URL-decoded, as Node's `cookie` reads it."""
    for part in header.split(";"):
        key, eq, value = part.partition("=")
        if eq and key.strip(_COOKIE_SPACE) == name:
            value = value.strip(_COOKIE_SPACE)
            if len(value) > _MAX_COOKIE_VALUE:
                return None
            if len(value) > 1 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return _decode_uri_component(value)
    return None


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _decode_uri_component(value: str) -> str:
    """JavaScript's decodeURIComponent; where that would throw, the raw value (as Node's `cookie` does)."""
    if "%" not in value or _BAD_ESCAPE.search(value):
        return value
    # A signed id's only escapes, the quick way; every other escape through unquote.
    quick = value.replace("%3A", ":").replace("%2F", "/").replace("%2B", "+").replace("%3D", "=")
    if "%" not in quick:
        return quick
    try:
        return urllib.parse.unquote(value, errors="strict")
    except UnicodeDecodeError:
        return value


_URL_SAFE = re.compile(r"[A-Za-z0-9\-_.!~*'():/+=]*\Z")  # what a signed id is made of


def _encode_cookie_value(value: str) -> str:
    """JavaScript's encodeURIComponent (a signed id needs only four escapes: the quick way)."""
    if _URL_SAFE.match(value):  # str.replace, not translate(): a dict of escapes costs 20 times as much
        return value.replace(":", "%3A").replace("/", "%2F").replace("+", "%2B").replace("=", "%3D")
    return urllib.parse.quote(value, safe="-_.!~*'()")


# -- The session engine: express-session's rules, with no web framework -----------------------

_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}
_PRIORITY = {"low": "Low", "medium": "Medium", "high": "High"}
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # an RFC 6265 token
_COOKIE_PATH = re.compile(r"[\x20-\x3a\x3c-\x7e]*\Z")  # RFC 6265's path-value: no control character, no ';'
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_COOKIE_DOMAIN = re.compile(r"\.?%s(?:\.%s)*\Z" % (_LABEL, _LABEL))  # host names' labels (RFC 1034)
DEFAULT_TOUCH_AFTER = 60.0


def _cookie_path(value: Any) -> str:
    if not isinstance(value, str) or not _COOKIE_PATH.match(value):
        raise ValueError("a cookie path is printable ASCII without ';', not %.80r" % (value,))
    return value


def _cookie_domain(value: Any) -> Optional[str]:
    if value is not None and not (isinstance(value, str) and _COOKIE_DOMAIN.match(value)):
        raise ValueError("a cookie domain is a host name, not %.80r" % (value,))
    return value


def _cookie_choice(what: str, names: dict[str, str]) -> Callable[[Any], Optional[str]]:
    def check(value: Any) -> Optional[str]:
        if value is None:
            return None
        name = names.get(value.lower()) if isinstance(value, str) else None
        if name is None:
            raise ValueError(
                "%s must be one of %s or None, not %.80r" % (what, ", ".join(names.values()), value)
            )
        return name

    return check


def _cookie_flag(what: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError("%s must be True or False, not %.80r" % (what, value))
        return value

    return check


def _checked(name: str, check: Callable[[Any], Any]) -> property:
    """A cookie attribute checked whenever it is set, as Node's cookie.serialize checks what it writes."""
    private = "_" + name

    def set_checked(cookie: "SessionCookie", value: Any) -> None:
        setattr(cookie, private, check(value))

    return property(operator.attrgetter(private), set_checked)


class SessionCookie:
    """The session cookie's settings, as `req.session.cookie` in express-session.

    `max_age` (seconds, None for a browser-session cookie) belongs to the session:
    change it for a "remember me" log-in and it is saved with the session; setting
    it restarts the lifetime from now, as express-session's maxAge does. The other
    attributes come from the adapter's settings; each is checked whenever it is set.
    """

    __slots__ = (
        "_domain",
        "_expires",
        "_httponly",
        "_max_age",
        "_partitioned",
        "_path",
        "_priority",
        "_samesite",
        "_secure",
    )
    _max_age: Optional[float]
    _path: str
    _domain: Optional[str]
    _secure: bool
    _httponly: bool
    _samesite: Optional[str]
    _partitioned: bool
    _priority: Optional[str]

    path = _checked("path", _cookie_path)
    domain = _checked("domain", _cookie_domain)
    secure = _checked("secure", _cookie_flag("secure"))
    httponly = _checked("httponly", _cookie_flag("httponly"))
    samesite = _checked("samesite", _cookie_choice("samesite", _SAMESITE))
    partitioned = _checked("partitioned", _cookie_flag("partitioned"))
    priority = _checked("priority", _cookie_choice("priority", _PRIORITY))

    def __init__(
        self,
        max_age: Optional[float] = None,
        path: str = "/",
        domain: Optional[str] = None,
        secure: bool = False,
        httponly: bool = True,
        samesite: Optional[str] = "Lax",
        partitioned: bool = False,
        priority: Optional[str] = None,
    ) -> None:
        self._expires: Optional[datetime.datetime] = None
        self.max_age = max_age
        self.path = path
        self.domain = domain
        self.secure = secure
        self.httponly = httponly
        self.samesite = samesite
        self.partitioned = partitioned
        self.priority = priority

    def copy(self, max_age: Optional[float], secure: bool) -> "SessionCookie":
        """These settings with another lifetime (starting now) and secure flag."""
        cookie = object.__new__(SessionCookie)
        # Checked when they were set here. Slot by slot rather than a loop of getattr/setattr: this runs
        # for every request's session. _expires comes with max_age.
        cookie._path = self._path
        cookie._domain = self._domain
        cookie._httponly = self._httponly
        cookie._samesite = self._samesite
        cookie._partitioned = self._partitioned
        cookie._priority = self._priority
        cookie.secure = secure
        cookie.max_age = max_age
        return cookie

    def settings(self) -> tuple:
        """What a session keeps of its cookie: the lifetime and the attributes (secure is the request's)."""
        return (
            self._max_age,
            self._path,
            self._domain,
            self._httponly,
            self._samesite,
            self._partitioned,
            self._priority,
        )

    def restore(self, stored: Any) -> None:
        """Take the attributes a stored session's cookie JSON holds (express-session keeps them per session,
        and a request may have changed them); what is missing or not valid stays as it is."""
        if isinstance(stored, dict):
            for key, name in _COOKIE_JSON_ATTRIBUTES:
                if key in stored:
                    try:
                        setattr(self, name, stored[key])
                    except ValueError:
                        pass

    @property
    def max_age(self) -> Optional[float]:
        """The cookie's lifetime in seconds (None: until the browser closes)."""
        return self._max_age

    @max_age.setter
    def max_age(self, seconds: Optional[float]) -> None:
        _check_lifetime(seconds, "a cookie's max_age")
        self._max_age = seconds
        self.reset_expiry(_utcnow())

    @property
    def expires(self) -> Optional[datetime.datetime]:
        """When the cookie expires: now + max_age as of the last reset (None: a browser-session cookie)."""
        return self._expires

    def reset_expiry(self, now: datetime.datetime) -> None:
        """Start the lifetime again from now (express-session's resetMaxAge), to the millisecond as JS."""
        if self._max_age is None:
            self._expires = None
        else:
            expires = now + datetime.timedelta(seconds=self._max_age)
            self._expires = expires.replace(microsecond=expires.microsecond // 1000 * 1000)

    def to_json(self) -> dict:
        """express-session's cookie JSON: its keys, in its order, absent ones left out."""
        original_max_age = None if self._max_age is None else _js_number(round(self._max_age * 1000, 6))
        data: dict[str, Any] = {"originalMaxAge": original_max_age}
        if self._partitioned:
            data["partitioned"] = True
        if self._priority:
            data["priority"] = self._priority.lower()
        data["expires"] = None if self._expires is None else _iso_z(self._expires)
        if self._secure:
            data["secure"] = True
        data["httpOnly"] = self._httponly
        if self._domain:
            data["domain"] = self._domain
        data["path"] = self._path
        if self._samesite:
            data["sameSite"] = self._samesite.lower()
        return data

    def header(self, name: str, value: str) -> str:
        """A Set-Cookie header value, attributes in the order Node's `cookie` serializes them."""
        parts = ["%s=%s" % (name, _encode_cookie_value(value))]
        if self._domain:
            parts.append("Domain=" + self._domain)
        parts.append("Path=" + self._path)
        if self._expires is not None:
            parts.append("Expires=" + _http_date(self._expires))
        if self._httponly:
            parts.append("HttpOnly")
        if self._secure:
            parts.append("Secure")
        if self._partitioned:
            parts.append("Partitioned")
        if self._priority:
            parts.append("Priority=" + self._priority)
        if self._samesite:
            parts.append("SameSite=" + self._samesite)
        return "; ".join(parts)

    def clearing_header(self, name: str) -> str:
        """A Set-Cookie header deleting the cookie: empty, expired in 1970, same path, domain and flags."""
        cleared = self.copy(None, self._secure)
        cleared._expires = _EPOCH
        return cleared.header(name, "")

    def __repr__(self) -> str:
        return "<SessionCookie %s>" % ", ".join(
            "%s=%r" % (key.lstrip("_"), getattr(self, key)) for key in self.__slots__
        )


# The cookie JSON's keys restore() takes, with the attribute each sets (secure is decided per request).
_COOKIE_JSON_ATTRIBUTES = (
    ("path", "path"),
    ("domain", "domain"),
    ("httpOnly", "httponly"),
    ("sameSite", "samesite"),
    ("partitioned", "partitioned"),
    ("priority", "priority"),
)

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _http_date(value: datetime.datetime) -> str:
    """An HTTP date ("Fri, 27 Nov 2026 09:05:00 GMT"), as JavaScript's Date#toUTCString writes it."""
    v = _as_utc(value)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _WEEKDAYS[v.weekday()],
        v.day,
        _MONTHS[v.month - 1],
        v.year,
        v.hour,
        v.minute,
        v.second,
    )


def _js_number(value: float) -> Union[int, float]:
    """JavaScript writes integral numbers without a fraction."""
    return int(value) if float(value).is_integer() else value


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)


def _stored_max_age(stored_cookie: Any, default: Optional[float]) -> Optional[float]:
    """The lifetime in seconds a stored session was given (its cookie's originalMaxAge), else default."""
    if isinstance(stored_cookie, dict) and "originalMaxAge" in stored_cookie:
        max_age = stored_cookie["originalMaxAge"]
        if max_age is None:
            return None
        if _is_lifetime(max_age, per_second=1000):
            return max_age / 1000
    return default  # none stored, or a damaged one


class SessionOptions(NamedTuple):
    """What a session does at the end of a request (express-session's options); a route may override them."""

    rolling: bool = False  # send the cookie, with a fresh expiry, on every response
    resave: bool = False  # save an unchanged session too
    save_uninitialized: bool = False  # store a new session while it is still empty
    touch_after: float = DEFAULT_TOUCH_AFTER  # move an unchanged session's expiry at most this often

    def overridden(self, lookup: Callable[[str], Any], prefix: str) -> "SessionOptions":
        """These options with overrides found by lookup("<prefix>.rolling") and so on (None: not overridden).

        Values may be text, as from an .ini file ("true", "30").
        """
        overrides = {}
        for key in self._fields:
            value = lookup("%s.%s" % (prefix, key))
            if value is not None:
                overrides[key] = _option_value(prefix, key, value)
        return self._replace(**overrides) if overrides else self


_FLAGS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def _option_value(prefix: str, key: str, value: Any) -> Any:
    """An override as the option's type: touch_after a number of seconds, the others true or false."""
    if key == "touch_after":
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = float("nan")
        if seconds >= 0:
            return seconds
        raise ValueError("%s.%s must be a number of seconds, not %r" % (prefix, key, value))
    flag = _FLAGS.get(value.strip().lower()) if isinstance(value, str) else None
    if flag is not None:
        return flag
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ValueError("%s.%s must be true or false, not %r" % (prefix, key, value))


class _Saved(NamedTuple):
    """What the store holds of a session, as this request last read or wrote it."""

    data: dict[str, str]  # each key's value as JSON: the unit of change detection (nested changes show)
    cookie: tuple  # the cookie's lifetime and attributes (SessionCookie.settings())
    expires: Optional[datetime.datetime]  # when the row expires
    token: Optional[str]  # the store's token for the row; None: the store has no row for it


_NOT_LOADED = object()  # the one key of a Session's own dict storage until it is loaded
_AFTER_RESPONSE = (
    "the session was used after its response was finished (in a generator or after "
    "start_response?): a change now would be lost; use it before the response starts"
)


class Session(dict):
    """One request's session: a dict of JSON values, loaded from the store on first use.

    Attributes: `id`, `cookie` (a SessionCookie), `is_new` (not found in the
    store when the request came in). Methods: regenerate(), destroy(),
    reload(), save(), touch(), locked(). The adapter saves it at the end of the request.

    A save writes only the keys this request changed or deleted, merged into the
    row as it is then, so concurrent requests changing different keys all keep
    their changes; for the same key the last writer wins (use locked()). The
    lifetime (cookie.max_age) is such a change too: a request that didn't change
    it never overwrites the one another request set.
    """

    def __init__(
        self,
        engine: "SessionEngine",
        cookie_sid: Optional[str],
        old_secret: bool,
        https: bool,
        options: SessionOptions,
    ) -> None:
        super().__init__()
        # Until loaded, the dict's own storage holds a placeholder: C code that checks a dict's size
        # before calling its methods (json.dumps does) then calls them, and they load it.
        dict.__setitem__(self, _NOT_LOADED, None)
        self._engine = engine
        self._store = engine.store
        self._options = options
        self._https = https
        self._cookie_sid = cookie_sid  # the verified id the browser sent, if any
        self._signed_with_old_secret = old_secret
        self._connection: Any = None  # the app's, where the store has none of its own (_open)
        self._loaded = self._finished = self._destroyed = self._locked = False
        self._forced = False  # save even if unchanged (Flask's session.modified = True)
        self._wrote_cookie = False  # this request saved another lifetime than it loaded
        self._cookie_stale = False  # a save merged into what another request wrote: maybe another lifetime
        # The store's failure in this request, kept for the WSGI middleware: the app's framework may turn
        # it into its own 500 page before the middleware sees it (Falcon and Django catch every exception).
        self._store_error: Optional[SessionStoreError] = None
        self._abandoned: Optional[BaseException] = None  # the request's exception: nothing is saved

    # Loading, on first use.

    def _load(self) -> None:
        if self._loaded:
            return
        if self._finished:
            raise RuntimeError(_AFTER_RESPONSE)
        found = None
        if self._cookie_sid is not None:
            self._open()
            found = self._store.load(self._cookie_sid)
        self._adopt(self._cookie_sid, found)
        self._is_new = found is None
        self._loaded = True

    def _adopt(self, sid: Optional[str], found: Optional[StoredSession]) -> None:
        """Take a stored session as this one, or start a new one (new id, empty, the default lifetime)."""
        dict.clear(self)  # the placeholder too
        self._cookie_stale = False
        if found is None or sid is None:
            self._id = self._engine.new_id()
            self._cookie = self._engine.new_cookie(
                self._https, self._engine.max_age
            )  # its lifetime starts now
            self._saved = _Saved({}, self._cookie.settings(), None, None)
            return
        stored_cookie = found.data.pop("cookie", None)
        dict.update(self, found.data)
        self._id = sid
        self._cookie = self._engine.new_cookie(
            self._https, _stored_max_age(stored_cookie, self._engine.max_age)
        )
        self._cookie.restore(stored_cookie)
        self._saved = _Saved(self._encoded(), self._cookie.settings(), found.expires, found.token)

    def _encoded(self) -> dict[str, str]:
        """Each key (as JSON makes it: a str) with its value as JSON."""
        if dict.__contains__(self, "cookie"):
            raise TypeError(
                "'cookie' is reserved in a session: use session.cookie for the cookie's settings"
            )
        return {
            key if type(key) is str else _object_key(key): _to_json(value, key)
            for key, value in dict.items(self)
        }

    def _changes(self, encoded: dict[str, str]) -> tuple[dict[str, str], list[str], bool]:
        """What differs from what was last saved: keys set (as JSON), keys removed, and whether the cookie's
        lifetime or attributes did."""
        saved = self._saved
        changes = {key: text for key, text in encoded.items() if saved.data.get(key) != text}
        removed = [key for key in saved.data if key not in encoded]
        return changes, removed, self._cookie.settings() != saved.cookie

    def _check_usable(self) -> None:
        if self._finished:
            raise RuntimeError(_AFTER_RESPONSE)
        self._load()

    @property
    def id(self) -> str:
        self._load()
        return self._id

    @property
    def cookie(self) -> SessionCookie:
        self._load()
        return self._cookie

    @property
    def is_new(self) -> bool:
        self._load()
        return self._is_new

    # What the request may do.

    def save(self) -> None:
        """Write the session now (it is also saved at the end of the request if it changes again)."""
        self._check_usable()
        self._write(self._encoded(), force=True)

    def _write(
        self,
        encoded: dict[str, str],
        force: bool = False,
        diff: Optional[tuple[dict[str, str], list[str], bool]] = None,
    ) -> bool:
        """Store what changed since the last save (a new session whole); returns whether it wrote.

        `diff`: what _changes(encoded) returned, when the caller has it already."""
        saved = self._saved
        changes, removed, cookie_changed = diff if diff is not None else self._changes(encoded)
        if saved.token is not None and not (changes or removed or cookie_changed or force):
            return False
        self._open()
        cookie = _to_json(self._cookie.to_json())
        if cookie_changed:
            changes["cookie"] = cookie
        expires = self._row_expiry()
        text = _json_object({"cookie": cookie, **encoded})  # express-session's shape, cookie first
        token = self._store.save(self._id, text, changes, removed, expires, saved.token)
        if token is None:
            # Destroyed or expired meanwhile (a log-out in another request): never bring it back, not
            # even by a later save in this request. What the request stores from here on is a new session's.
            logger.debug("session %.8s... is gone from the store; its changes are dropped", self._id)
            self._adopt(None, None)
            return False
        self._saved = _Saved(encoded, self._cookie.settings(), expires, token)
        self._wrote_cookie = self._wrote_cookie or cookie_changed
        # Merged into a row another request wrote since this one loaded it: the row keeps the lifetime
        # that one may have set ("remember me"), and this request's cookie, with the lifetime it
        # loaded, must not replace that request's in the browser (see _finish); until it sets its own.
        self._cookie_stale = not cookie_changed and (token == "" or self._cookie_stale)
        return True

    def touch(self) -> None:
        """Restart the session's lifetime now, in the cookie and in the store."""
        self._check_usable()
        self._cookie.reset_expiry(_utcnow())
        if self._saved.token is not None:
            self._touch_row()

    def _touch_row(self) -> None:
        self._open()
        self._store.touch(self._id, {"cookie": self._cookie.to_json()}, token=self._saved.token)
        self._saved = self._saved._replace(expires=self._row_expiry())

    def _row_expiry(self) -> datetime.datetime:
        """When the stored row expires: with the cookie, or a day from now for a browser-session one."""
        return self._cookie.expires or _utcnow() + ONE_DAY

    def regenerate(self) -> None:
        """Move the data to a new id and delete the old row: call it on log-in (session fixation)."""
        self._check_usable()
        self._delete_row()
        self._id = self._engine.new_id()

    def destroy(self) -> None:
        """Delete the session and clear its cookie; what is stored afterwards starts a new session."""
        self._check_usable()
        self._delete_row()
        self._adopt(None, None)
        self._destroyed = True

    def reload(self) -> None:
        """Read the session again from the store, dropping unsaved changes (a vanished one starts anew)."""
        self._check_usable()
        found = None
        if self._saved.token is not None:
            self._open()
            found = self._store.load(self._id)
        self._adopt(self._id, found)

    def _delete_row(self) -> None:
        if self._saved.token is not None:
            self._open()
            self._store.destroy(self._id)
            self._saved = _Saved({}, self._saved.cookie, None, None)

    @contextlib.contextmanager
    def locked(self) -> Iterator["Session"]:
        """Make a read-modify-write atomic: reload under the row lock, save before it is released.

            with session.locked():
                session["balance"] = session.get("balance", 0) + amount

        Changes made before the block and not yet saved are dropped by the reload (but for a
        block inside another, which holds the lock already). A block that raises, abort()
        included, is undone, in the session as in the database; one that ends in a redirect is
        saved.
        """
        self._check_usable()
        self._open()
        outer, before, redirect = self._locked, None, None
        try:
            with (
                self._store.transaction()
            ):  # a new session has no row to lock, but the app's statements roll back
                if self._saved.token is not None and not outer:
                    self._adopt(self._id, self._store.load(self._id, for_update=True))
                self._locked = True
                before = (dict(self.__dict__), copy.copy(self._cookie), self._encoded())
                try:
                    yield self
                except BaseException as exc:
                    if not self._engine.is_redirect(exc):
                        raise
                    redirect = exc
                if (
                    self._saved.token is not None
                ):  # one new, destroyed or regenerated in the block is stored later
                    self._write(self._encoded())
        except BaseException as exc:
            if before is not None:
                self._restore(*before)
            if isinstance(exc, SessionStoreError):
                self._store_error = exc
            raise
        finally:
            self._locked = outer
        if redirect is not None:
            raise redirect

    def run_locked(self, func: Callable[["Session"], Any], attempts: int = CONFLICT_ATTEMPTS) -> Any:
        """func(session) inside locked(), run again when it loses a conflict (SessionConflict); its result.

            session.run_locked(lambda s: s.update(views=s.get("views", 0) + 1))

        A block that another transaction beat to the same row (on another node of a Galera
        cluster, where row locks are only the node's own) is undone whole, then run again on the
        session as it is stored now, up to `attempts` times in all: func may run more than once,
        so it should change only the session and the database. Inside the app's own transaction
        a conflict dooms more than the block, so it is raised at once.
        """
        for attempt in _retrying(self._store.db, attempts):
            with attempt, self.locked():
                return func(self)
        raise AssertionError("unreachable: the last attempt raises")

    def _restore(self, attributes: dict, cookie: SessionCookie, encoded: dict[str, str]) -> None:
        """Put back what a locked() block that failed changed: the data, the attributes and the cookie."""
        dict.clear(self)
        dict.update(self, {key: json.loads(text) for key, text in encoded.items()})
        self.__dict__.update(attributes)
        self._cookie = cookie

    # At the end of the request: save, touch or neither, then the cookie (express-session's rules).

    def _rolling(self) -> bool:
        return self._options.rolling

    def _finish(self) -> Optional[str]:
        """Save or touch as the options say; the Set-Cookie header to send ("": none), None if unused."""
        if self._abandoned is not None:
            self._finished = True
            return None
        if not self._loaded:
            if not (self._options.rolling and self._cookie_sid is not None):
                self._finished = True
                return None  # never used: no query, no cookie
            self._load()  # rolling promises a fresh expiry on every response
        self._finished = True
        self._cookie.reset_expiry(_utcnow())
        encoded = self._encoded()
        diff = self._changes(encoded)
        changes, removed, cookie_changed = diff
        cookie_changed = cookie_changed or self._wrote_cookie
        # express-session's isModified: a new id, other data or another lifetime than at the start.
        browser_has_id = self._id == self._cookie_sid
        modified = bool(changes or removed) or cookie_changed or self._forced
        if self._saved.token is not None:
            wrote = self._write(encoded, self._options.resave or self._forced, diff)
            if browser_has_id and not wrote:
                self._touch_if_due()
        elif modified or (self._options.save_uninitialized and not self._destroyed):
            self._write(encoded, diff=diff)  # an empty new session is not stored (saveUninitialized)
        if self._saved.token is not None:
            if browser_has_id and self._cookie_stale:
                return ""  # the browser keeps the cookie it has, from the request that wrote the row last
            if (
                not browser_has_id
                or self._rolling()
                or self._signed_with_old_secret
                or cookie_changed
                or (modified and self._cookie.expires is not None)
            ):
                return self._engine.cookie_header(self._cookie, self._id, self._https)
        elif self._destroyed and self._cookie_sid is not None:
            return self._engine.cookie_header(self._cookie, None, self._https)
        return ""

    def _touch_if_due(self) -> None:
        """Move the row's expiry only once it would move by touch_after or more (a write saved)."""
        saved = self._saved
        if (
            saved.token is not None
            and saved.expires is not None
            and ((self._row_expiry() - saved.expires).total_seconds() >= self._options.touch_after)
        ):
            self._touch_row()

    def _release(self) -> None:
        self._finished = True
        if self._connection is not None:
            self._connection.close()

    def _open(self) -> None:
        """Where the store has no connection of its own (SQLite in rollback-journal mode), open the app's
        for the rest of the request, so that its statements share one; else nothing."""
        if self._connection is None:
            self._connection = self._store.request_connection()
        self._connection.open()

    def __copy__(self) -> dict:
        return self.copy()  # a plain dict: a copy has no request to be saved with

    def __deepcopy__(self, memo: dict) -> dict:
        return copy.deepcopy(self.copy(), memo)

    def __repr__(self) -> str:
        if not self._loaded:
            return "<Session (not loaded)>"
        return "<Session %.8s... %s>" % (self._id, dict.__repr__(self))


def _loading(name: str, changes: bool) -> Callable:
    method = getattr(dict, name)
    if changes:

        def loading(self, *args, **kwargs):
            self._check_usable()
            return method(self, *args, **kwargs)
    else:

        def loading(self, *args, **kwargs):
            self._load()
            return method(self, *args, **kwargs)

    loading.__name__ = name
    loading.__doc__ = method.__doc__
    return loading


# Every way of reading or writing the dict loads the session first; a change after the response raises.
for _name in (
    "__getitem__",
    "__contains__",
    "__iter__",
    "__len__",
    "__eq__",
    "__ne__",
    "__or__",
    "__reversed__",
    "get",
    "keys",
    "values",
    "items",
    "copy",
):
    setattr(Session, _name, _loading(_name, changes=False))
for _name in ("__setitem__", "__delitem__", "__ior__", "pop", "popitem", "setdefault", "update", "clear"):
    setattr(Session, _name, _loading(_name, changes=True))
del _name


def _noting_store_errors(method: Callable) -> Callable:
    @functools.wraps(method)
    def noting(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except SessionStoreError as exc:
            self._store_error = exc
            raise

    return noting


# What reaches the store on the request's behalf notes its failures in session._store_error.
for _name in ("_load", "save", "touch", "regenerate", "destroy", "reload"):
    setattr(Session, _name, _noting_store_errors(getattr(Session, _name)))
del _name


class SessionEngine:
    """express-session's rules for one app, with no web framework; the adapters below are thin layers on it.

    For each request, open() reads the cookie and makes the request's Session (loaded on
    first use); finish() saves, touches or does nothing and returns the headers to send;
    release() ends it. The options are SessionPlugin's (see the README).
    """

    def __init__(
        self,
        db_or_store: Union[peewee.Database, PeeweeSessionStore, None] = None,
        *,
        secret: Union[str, Iterable[str]],
        cookie_name: str = "connect.sid",
        max_age: Optional[float] = 86400,
        path: str = "/",
        domain: Optional[str] = None,
        httponly: bool = True,
        secure: Union[bool, str] = False,
        samesite: Optional[str] = "Lax",
        partitioned: bool = False,
        priority: Optional[str] = None,
        resave: bool = False,
        save_uninitialized: bool = False,
        rolling: bool = False,
        touch_after: Optional[float] = None,
        trust_proxy: bool = False,
        genid: Optional[Callable[[], str]] = None,
        is_redirect: Callable[[BaseException], bool] = lambda exc: False,
        session_class: type[Session] = Session,
        secure_over_http: bool = False,
        **store_options: Any,
    ) -> None:
        self.secrets = _check_secrets(secret)
        if not isinstance(cookie_name, str) or not _COOKIE_NAME.match(cookie_name):
            raise ValueError("cookie_name %r is not a valid cookie name" % (cookie_name,))
        if secure not in (True, False, "auto"):
            raise ValueError("secure must be True, False or 'auto', not %r" % (secure,))
        _check_lifetime(max_age, "max_age")
        # The settings every session's cookie starts from, checked as SessionCookie checks them.
        self.cookie = SessionCookie(
            None, path, domain, secure is True, httponly, samesite, partitioned, priority
        )
        if secure is False and (self.cookie.samesite == "None" or partitioned):
            raise ValueError("browsers drop SameSite=None and Partitioned cookies unless they are secure")
        if isinstance(db_or_store, PeeweeSessionStore):
            if store_options:
                raise TypeError("store options go to the store you made: %s" % ", ".join(store_options))
            self.store, self._owns_store = db_or_store, False
        else:
            self.store, self._owns_store = PeeweeSessionStore(db_or_store, **store_options), True
        if touch_after is None:
            touch_after = DEFAULT_TOUCH_AFTER if max_age is None else min(DEFAULT_TOUCH_AFTER, max_age / 10)
        self.cookie_name = cookie_name
        self.max_age = max_age
        self.secure = secure  # True, False or "auto": decided per request
        self.trust_proxy = trust_proxy
        self.genid = genid or _default_genid
        self.is_redirect = (
            is_redirect  # an exception that ends a request normally: a locked() block ending so is saved
        )
        self.session_class = session_class
        self.secure_over_http = secure_over_http  # express-session sends a secure cookie over HTTPS only
        self.options = SessionOptions(rolling, resave, save_uninitialized, float(touch_after))

    # A request's session, from start to end.

    def open(self, cookie_header: str, https: bool, options: Optional[SessionOptions] = None) -> Session:
        """The session of a request with this Cookie header, made over HTTPS or not; loaded on first use."""
        sid, old_secret = self.sid_from_cookie(cookie_header)
        return self.session_class(self, sid, old_secret, https, options or self.options)

    def open_environ(self, environ: dict, options: Optional[SessionOptions] = None) -> Session:
        """open() for a WSGI request (X-Forwarded-Proto believed only with trust_proxy)."""
        return self.open(environ.get("HTTP_COOKIE", ""), _is_https(environ, self.trust_proxy), options)

    def finish(
        self, session: Session, header: Callable[[str], Optional[str]] = lambda name: None
    ) -> list[tuple[str, str]]:
        """Save, touch or do nothing, and return the headers for the response.

        `header(name)` reads a header the response has already. Add a Set-Cookie; set the
        others (Vary, Cache-Control) in place of the response's own. Nothing for a session
        the request never used.
        """
        set_cookie = session._finish()
        if set_cookie is None:
            return []
        # A response that read a session depends on the cookie: keep it out of shared caches.
        headers = []
        vary = header("Vary")
        if not vary:
            headers.append(("Vary", "Cookie"))
        elif "cookie" not in vary.lower() and vary.strip() != "*":
            headers.append(("Vary", vary + ", Cookie"))
        if not header("Cache-Control"):
            headers.append(("Cache-Control", "private"))
        if set_cookie:
            headers.append(("Set-Cookie", set_cookie))
        return headers

    def abandon(self, session: Session, exc: BaseException) -> None:
        """The request failed with exc, which its framework answers with an error page: save nothing."""
        session._abandoned = exc

    def abandoned(self, session: Session) -> Optional[BaseException]:
        """What the session's request was abandoned for (see abandon), if it was."""
        return session._abandoned

    def store_error(self, session: Session) -> Optional[SessionStoreError]:
        """The store's last failure in the session's request (the app may have made its own page of it)."""
        return session._store_error

    def release(self, session: Session) -> None:
        """End the session's request: a later change raises RuntimeError."""
        session._release()

    # What sessions ask of it.

    def sid_from_cookie(self, cookie_header: str) -> tuple[Optional[str], bool]:
        """The verified session id in a Cookie header (or None), and whether an old secret signed it."""
        value = _read_cookie(cookie_header, self.cookie_name)
        if value is not None:
            for index, secret in enumerate(self.secrets):  # one signature check per secret, newest first
                sid = unsign_session_id(value, secret)
                if sid is not None:
                    return (sid, index > 0) if _is_valid_sid(sid) else (None, False)
        return None, False

    def new_id(self) -> str:
        sid = self.genid()
        _check_sid(sid)
        return sid

    def new_cookie(self, https: bool, max_age: Optional[float]) -> SessionCookie:
        """A session's cookie: the settings, with a lifetime starting now."""
        return self.cookie.copy(max_age, https if self.secure == "auto" else self.secure is True)

    def cookie_header(self, cookie: SessionCookie, sid: Optional[str], https: bool) -> str:
        """The Set-Cookie value for a session id (None: one clearing the cookie); "": it can't be sent."""
        if cookie.secure and not https and not self.secure_over_http:
            logger.debug("not sending the secure session cookie over plain HTTP")
            return ""
        if sid is None:
            return cookie.clearing_header(self.cookie_name)
        return cookie.header(self.cookie_name, sign_session_id(sid, self.secrets[0]))

    def close(self) -> None:
        if self._owns_store:
            self.store.close()


def _check_secrets(secret: Union[str, Iterable[str], None]) -> list:
    secret_list = (
        [secret] if isinstance(secret, str) else list(secret) if isinstance(secret, (list, tuple)) else []
    )
    if not secret_list or not all(isinstance(s, str) and s for s in secret_list):
        raise ValueError("sessions need secret=: a non-empty string, or a list of them (the first signs)")
    for s in secret_list:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: bytes from the environment that were not UTF-8
            raise ValueError("a secret must be text that UTF-8 can encode (as Node reads it)") from None
    return secret_list


def _default_genid() -> str:
    return secrets.token_urlsafe(24)  # 192 random bits, 32 characters, as express-session's uid-safe


def _is_https(environ: dict, trust_proxy: bool) -> bool:
    if trust_proxy and environ.get("HTTP_X_FORWARDED_PROTO"):
        return environ["HTTP_X_FORWARDED_PROTO"].split(",")[0].strip().lower() == "https"
    return environ.get("wsgi.url_scheme") == "https"


# -- Adapters: Bottle, plain WSGI and Flask, each a thin layer on SessionEngine -----------------

# What an adapter answers with its error_status: the store can't serve now, or lost a conflict, both
# worth a retry. Anything else (bad input among it) is the app's error, as raised: never "retry later".
_RETRY_LATER = (SessionStoreUnavailable, SessionConflict)
_RETRY_LATER_TEXT = "The session store is unavailable; please retry.\n"
_RETRY_AFTER_S = "5"


def _answering(status: int, exc: BaseException) -> None:
    logger.warning("answering %d: %s", status, exc)


def _apply_headers(headers: list[tuple[str, str]], add: Callable, replace: Callable) -> None:
    """SessionEngine.finish()'s headers onto a response: Set-Cookie added, the others in place of its own."""
    for name, value in headers:
        (add if name == "Set-Cookie" else replace)(name, value)


def _takes_argument(callback: Callable, name: str) -> bool:
    """Whether the route's own function (under functools.wraps decorators) has a parameter `name`."""
    try:
        parameters = inspect.signature(inspect.unwrap(callback)).parameters
    except (TypeError, ValueError):
        return False
    parameter = parameters.get(name)
    return parameter is not None and parameter.kind in (
        parameter.POSITIONAL_OR_KEYWORD,
        parameter.KEYWORD_ONLY,
    )


def _is_bottle_redirect(exc: BaseException) -> bool:
    import bottle

    return isinstance(exc, bottle.HTTPResponse) and not isinstance(exc, bottle.HTTPError)  # abort() fails


class SessionPlugin:
    """A Bottle plugin giving callbacks that take a `session` argument a server-side session.

    It does what express-session does for Express: a signed cookie in the same
    format, the session loaded only when used, saved only when changed (nested
    changes included), touched otherwise at most every `touch_after` seconds.
    The options are SessionEngine's; `touch_after` defaults to 60 seconds or a
    tenth of max_age, whichever is shorter. A route may override rolling, resave,
    save_uninitialized and touch_after: @app.route(..., session={"rolling": True}).
    """

    api = 2

    def __init__(
        self,
        db_or_store: Union[peewee.Database, PeeweeSessionStore, None] = None,
        *,
        secret: Union[str, Iterable[str]],
        keyword: str = "session",
        error_status: Optional[int] = None,
        **options: Any,
    ) -> None:
        if not isinstance(keyword, str) or not keyword.isidentifier():
            raise ValueError("keyword must be a Python identifier, not %r" % (keyword,))
        self.engine = SessionEngine(db_or_store, secret=secret, is_redirect=_is_bottle_redirect, **options)
        self.name = keyword  # Bottle keeps one plugin per name: two keywords, two plugins
        self.keyword = keyword
        self.error_status = error_status

    @property
    def store(self) -> PeeweeSessionStore:
        return self.engine.store

    def setup(self, app: Any) -> None:
        import bottle

        for other in app.plugins:
            if isinstance(other, SessionPlugin) and other.keyword == self.keyword:
                raise bottle.PluginError(
                    "a session plugin with keyword %r is already installed" % self.keyword
                )

    def apply(self, callback: Callable, route: Any) -> Callable:
        import bottle

        if not _takes_argument(route.callback, self.keyword):
            return callback
        engine, keyword = self.engine, self.keyword
        options = engine.options.overridden(route.config.get, self.name)

        def finish(session: Session, response: Any) -> None:
            _apply_headers(
                engine.finish(session, response.get_header), response.add_header, response.set_header
            )

        def with_session(*args, **kwargs):
            session = engine.open_environ(bottle.request.environ, options)
            kwargs[keyword] = session
            try:
                try:
                    result = callback(*args, **kwargs)
                    if result is session:
                        _ = session.id  # loads it: Bottle serializes it after the session is finished
                except bottle.HTTPResponse as sent:  # redirect(), abort(), raised HTTPError
                    finish(session, sent)
                    raise
                finish(session, result if isinstance(result, bottle.HTTPResponse) else bottle.response)
                return result
            except _RETRY_LATER as exc:
                if self.error_status is None:
                    raise
                _answering(self.error_status, exc)
                raise bottle.HTTPError(
                    self.error_status, _RETRY_LATER_TEXT, exc, headers={"Retry-After": _RETRY_AFTER_S}
                ) from exc
            finally:
                engine.release(session)

        return with_session

    def close(self) -> None:
        self.engine.close()


class SessionMiddleware:
    """WSGI middleware giving any WSGI app a server-side session in environ["peewee_sessions.session"].

    The session is loaded on first use, and saved (its cookie added) when the app calls
    start_response, a redirect or an error page included; an exception out of the app, or
    a start_response with exc_info, saves nothing. A change after start_response raises
    RuntimeError. The options are SessionPlugin's; with error_status, a SessionStoreError
    that reaches the middleware before the response starts is answered with that status, as is
    one the app's framework made its own 5xx page of.
    """

    def __init__(
        self,
        app: Callable,
        db_or_store: Union[peewee.Database, PeeweeSessionStore, None] = None,
        *,
        secret: Union[str, Iterable[str]],
        environ_key: str = "peewee_sessions.session",
        error_status: Optional[int] = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.engine = SessionEngine(db_or_store, secret=secret, **options)
        self.environ_key = environ_key
        self.error_status = error_status

    @property
    def store(self) -> PeeweeSessionStore:
        return self.engine.store

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        engine = self.engine
        session = engine.open_environ(environ)
        environ[self.environ_key] = session
        started: list[str] = []
        replaced: list[str] = []

        def start_session_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable:
            failure = engine.store_error(session)
            if (
                isinstance(failure, _RETRY_LATER)
                and self.error_status is not None
                and status[:1] == "5"
                and not started
            ):
                # The store failed in the app and its framework answered with its own error page (Falcon
                # and Django catch every exception): answer error_status instead, saving nothing.
                status, headers = _unavailable(self.error_status, failure)
                replaced.append(status)
            elif exc_info is None and not started:
                headers = list(headers)
                for name, value in engine.finish(session, functools.partial(_wsgi_header, headers)):
                    if name != "Set-Cookie":
                        headers = [(key, old) for key, old in headers if key.lower() != name.lower()]
                    headers.append((name, value))
            engine.release(session)
            started.append(status)
            return start_response(status, headers, exc_info)

        try:
            result = self.app(environ, start_session_response)
        except _RETRY_LATER as exc:
            engine.release(session)
            if self.error_status is None or started:
                raise
            start_response(*_unavailable(self.error_status, exc))
            return [_UNAVAILABLE]
        except BaseException:
            engine.release(session)
            raise
        if replaced:  # the app's error page goes, for ours
            _ReleasingIterable(result, engine, session).close()
            return [_UNAVAILABLE]
        return _ReleasingIterable(result, engine, session)

    def close(self) -> None:
        self.engine.close()


_UNAVAILABLE = _RETRY_LATER_TEXT.encode("ascii")


def _unavailable(status: int, exc: BaseException) -> tuple[str, list[tuple[str, str]]]:
    """The status line and headers of the middleware's error_status response."""
    _answering(status, exc)
    phrase = http.HTTPStatus(status).phrase
    return "%d %s" % (status, phrase), [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Retry-After", _RETRY_AFTER_S),
    ]


def _wsgi_header(headers: list[tuple[str, str]], name: str) -> Optional[str]:
    lowered = name.lower()
    return next((value for key, value in headers if key.lower() == lowered), None)


class _ReleasingIterable:
    """A WSGI body that releases the session when the server closes it (start_response may come late)."""

    def __init__(self, body: Iterable[bytes], engine: SessionEngine, session: Session) -> None:
        self.body, self.engine, self.session = body, engine, session

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            self.engine.release(self.session)


@functools.cache
def _flask_session_class() -> type[Session]:
    """Flask's session: a Session that is also Flask's SessionMixin (made on first use)."""
    import flask
    from flask.sessions import SessionMixin

    class FlaskSession(Session, SessionMixin):
        """flask.session: a Session with Flask's `permanent`, `new`, `modified` and `accessed`."""

        @property
        def permanent(self) -> bool:
            """Whether the session outlives the browser: it then lives PERMANENT_SESSION_LIFETIME."""
            return self.cookie.max_age is not None

        @permanent.setter
        def permanent(self, value: bool) -> None:
            self._check_usable()
            lifetime = flask.current_app.permanent_session_lifetime.total_seconds() if value else None
            if lifetime != self._cookie.max_age:
                self._cookie.max_age = lifetime

        @property
        def new(self) -> bool:  # type: ignore[override]
            return self.is_new

        @property
        def modified(self) -> bool:
            """Whether the request changed the session; set it to True to save it unchanged."""
            self._load()
            changes, removed, cookie_changed = self._changes(self._encoded())
            return self._forced or bool(changes or removed) or cookie_changed

        @modified.setter
        def modified(self, value: bool) -> None:
            self._forced = bool(value)

        @property
        def accessed(self) -> bool:
            return self._loaded

        @accessed.setter
        def accessed(self, value: bool) -> None:
            pass  # derived: a session is accessed when it was loaded

        def _rolling(self) -> bool:
            # SESSION_REFRESH_EACH_REQUEST renews permanent sessions only, as Flask's own sessions.
            return self._options.rolling and self._cookie.max_age is not None

    return FlaskSession


def _is_flask_redirect(exc: BaseException) -> bool:
    from werkzeug.exceptions import HTTPException

    return isinstance(exc, HTTPException) and 300 <= (exc.code or 0) < 400


class FlaskSessionInterface:
    """Flask's session interface: `app.session_interface = FlaskSessionInterface(db)`.

    flask.session is then a server-side Session. As Flask's own sessions, it signs with
    app.secret_key (any of SECRET_KEY_FALLBACKS also verifies), takes its cookie from
    the SESSION_COOKIE_* settings, and is a browser-session cookie until
    `session.permanent = True`, which makes it live PERMANENT_SESSION_LIFETIME (renewed on
    each request with SESSION_REFRESH_EACH_REQUEST). Options given here (SessionPlugin's)
    override the app's config; error_status answers a load or save that fails with that status.
    """

    def __init__(
        self,
        db_or_store: Union[peewee.Database, PeeweeSessionStore, None] = None,
        *,
        error_status: Optional[int] = None,
        **options: Any,
    ) -> None:
        if "secret" in options:
            raise TypeError("FlaskSessionInterface signs with app.secret_key (and SECRET_KEY_FALLBACKS)")
        if not isinstance(db_or_store, PeeweeSessionStore):
            store_options = {key: options.pop(key) for key in list(options) if key in _STORE_OPTIONS}
            db_or_store = PeeweeSessionStore(db_or_store, **store_options)
        import flask

        self.store = db_or_store
        self.options = options
        self.error_status = error_status
        self._engines: weakref.WeakKeyDictionary[Any, tuple[tuple, SessionEngine]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        # Flask answers an uncaught exception with its error page, and still saves the session then.
        flask.got_request_exception.connect(self._abandon, weak=False)

    def _engine(self, app: Any) -> Optional[SessionEngine]:
        """The app's engine, made again when its secrets or settings change; None without app.secret_key."""
        if not app.secret_key:
            return None
        config = app.config
        secrets_ = [
            _text_secret(key) for key in [app.secret_key, *(config.get("SECRET_KEY_FALLBACKS") or [])]
        ]
        settings = {
            "cookie_name": config["SESSION_COOKIE_NAME"],
            "domain": config.get("SESSION_COOKIE_DOMAIN") or None,
            "path": config.get("SESSION_COOKIE_PATH") or config.get("APPLICATION_ROOT") or "/",
            "secure": bool(config.get("SESSION_COOKIE_SECURE")),
            "httponly": bool(config.get("SESSION_COOKIE_HTTPONLY", True)),
            "samesite": config.get("SESSION_COOKIE_SAMESITE"),
            "partitioned": bool(config.get("SESSION_COOKIE_PARTITIONED")),
            "max_age": None,  # a browser-session cookie until session.permanent = True
            "rolling": bool(config.get("SESSION_REFRESH_EACH_REQUEST", True)),
        }
        settings.update(self.options)
        known, key = self._engines.get(app), (tuple(secrets_), tuple(settings.items()))
        if known is not None and known[0] == key:
            return known[1]
        # A secure cookie goes out over plain HTTP too, as Flask's own (behind a proxy without ProxyFix).
        engine = SessionEngine(
            self.store,
            secret=secrets_,
            is_redirect=_is_flask_redirect,
            session_class=_flask_session_class(),
            secure_over_http=True,
            **settings,
        )
        with self._lock:
            self._engines[app] = (key, engine)
        return engine

    def _abandon(self, sender: Any, exception: BaseException, **extra: Any) -> None:
        import flask

        engine, session = self._engines.get(sender), cast(Any, flask.session)._get_current_object()
        if engine is not None and isinstance(session, Session):
            engine[1].abandon(session, exception)

    # Flask's SessionInterface.

    def open_session(self, app: Any, request: Any) -> Optional[Session]:
        engine = self._engine(app)
        return None if engine is None else engine.open_environ(request.environ)

    def make_null_session(self, app: Any) -> Any:
        from flask.sessions import NullSession

        return NullSession()

    def is_null_session(self, obj: Any) -> bool:
        from flask.sessions import NullSession

        return isinstance(obj, NullSession)

    def save_session(self, app: Any, session: Session, response: Any) -> None:
        engine = self._engine(app)
        if engine is None:
            return
        try:
            failure = engine.abandoned(session)
            if isinstance(failure, _RETRY_LATER) and self.error_status is not None:
                raise failure  # the store failed in the view and Flask made its 500 page of it: as below
            headers = engine.finish(session, response.headers.get)  # nothing for an abandoned session
        except _RETRY_LATER as exc:
            if self.error_status is None:
                raise
            _answering(self.error_status, exc)
            response.status_code = self.error_status
            response.headers["Retry-After"] = _RETRY_AFTER_S
            response.set_data(_RETRY_LATER_TEXT)
            return
        finally:
            engine.release(session)
        _apply_headers(headers, response.headers.add, response.headers.set)


def _text_secret(secret: Any) -> str:
    """Flask's secret_key as the text that signs: bytes as UTF-8, or (os.urandom's) as their hex digits."""
    if isinstance(secret, bytes):
        try:
            return secret.decode("utf-8")
        except UnicodeDecodeError:
            return secret.hex()  # a Node app sharing the cookie takes the same hex text as its secret
    return secret


_STORE_OPTIONS = frozenset(inspect.signature(PeeweeSessionStore).parameters) - {"db"}


# -- The command line ------------------------------------------------------------------------

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_BAD_URL, EXIT_UNREACHABLE, EXIT_NO_TABLE = 0, 1, 2, 3, 4, 5
EXIT_REFUSED = 6


class _CommandError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peewee-sessions",
        description="Look after a peewee-sessions table.",
        epilog="Exit codes: 0 done, 1 database error, 2 usage, 3 bad database URL, 4 server unreachable, "
        "5 table missing, 6 log-in refused (wrong user, password or database name). "
        "--db, --table and --sid-field go before or after the command.",
    )
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    _add_table_options(parser, os.environ.get("PEEWEE_SESSIONS_DB"), "sessions", "sid")
    # The same options after the command; SUPPRESS: when absent there, they keep what came before it.
    common = argparse.ArgumentParser(add_help=False)
    _add_table_options(common, argparse.SUPPRESS, argparse.SUPPRESS, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sql = commands.add_parser(
        "sql", parents=[common], help="print the CREATE TABLE and CREATE INDEX statements"
    )
    sql.add_argument(
        "--dialect", choices=list(_DIALECT_NAMES), help="write for this database instead of --db's"
    )
    commands.add_parser(
        "create-table", parents=[common], help="create the table and its index if they are missing"
    )
    sweep = commands.add_parser("sweep", parents=[common], help="delete expired sessions, in batches")
    sweep.add_argument("--batch", type=int, default=1000, help="rows per DELETE (default: %(default)s)")
    stats = commands.add_parser(
        "stats", parents=[common], help="live and expired counts, expiry range, table size"
    )
    stats.add_argument("--json", action="store_true", help="print JSON")
    destroy = commands.add_parser(
        "destroy", parents=[common], help="delete the given sessions, or a user's (--user)"
    )
    destroy.add_argument("sids", nargs="*", metavar="SID")
    destroy.add_argument("--user", metavar="ID", help="delete every session of this user (needs --user-key)")
    destroy.add_argument("--keep", metavar="SID", help="with --user: but this one")
    sessions = commands.add_parser(
        "sessions", parents=[common], help="list a user's live sessions (needs --user-key)"
    )
    sessions.add_argument("--user", metavar="ID", required=True, help="the user's id")
    sessions.add_argument("--json", action="store_true", help="print each session's JSON, by id")
    for command in (sql, commands.choices["create-table"], destroy, sessions):
        command.add_argument(
            "--user-key",
            metavar="KEY",
            default=os.environ.get("PEEWEE_SESSIONS_USER_KEY"),
            help="the session key holding the user's id, as the store's user_key: user_id, "
            "passport.user (default: $PEEWEE_SESSIONS_USER_KEY)",
        )
    clear = commands.add_parser("clear", parents=[common], help="delete every session (needs --yes)")
    clear.add_argument("--yes", action="store_true", help="yes, delete them all")
    return parser


def _add_table_options(parser: argparse.ArgumentParser, db: Any, table: Any, sid_field: Any) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        default=db,
        help="database URL: sqlite:///path, postgresql://..., mysql://... (default: $PEEWEE_SESSIONS_DB)",
    )
    parser.add_argument("--table", default=table, help="the session table (default: sessions)")
    parser.add_argument("--sid-field", default=sid_field, help="the session-id column (default: sid)")


def _masked_url(url: str) -> str:
    """The URL with its password (in the user part or the query) replaced by ***, for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            netloc = "%s:***@%s" % (user.partition(":")[0], host)
        query = re.sub(r"(?i)((?:^|&)(?:password|passwd)=)[^&]*", r"\1***", parts.query)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:  # not even a URL (a bad port is read only when asked for): show none of it
        return "(unreadable URL)"


def _one_line(message: Any, url: Optional[str] = None) -> str:
    """A message's first line (drivers add LINE 1, HINT, ...), with the URL's password removed."""
    text = _first_line(message)
    if url:
        with contextlib.suppress(ValueError):
            password = urllib.parse.urlsplit(url).password or ""
            for secret in (password, urllib.parse.unquote(password)):  # as written, and as decoded
                if secret:
                    text = text.replace(secret, "***")
    return text


def _open_database(url: Optional[str], may_create: bool) -> peewee.Database:
    if not url:
        raise _CommandError("no database: pass --db URL or set PEEWEE_SESSIONS_DB", EXIT_USAGE)
    from playhouse.db_url import connect

    shown = _masked_url(url)
    scheme, _, rest = url.partition("://")
    if scheme.split("+")[0] == "sqlite" and rest and not rest.startswith("/"):
        # sqlite://cli.db reads "cli.db" as a host, and opens an empty database in memory.
        raise _CommandError(
            "%s names no file: did you mean sqlite:///%s (a relative path) or sqlite:////%s "
            "(an absolute one)?" % (shown, rest, rest),
            EXIT_BAD_URL,
        )
    try:
        db = connect(url)
        _dialect_for(db)
    except Exception as exc:  # db_url raises several kinds for a URL it can't use
        raise _CommandError(
            "cannot use the database URL %s: %s" % (shown, _one_line(exc, url)), EXIT_BAD_URL
        ) from None
    path = _dialect_for(db).file_of(db)
    if path is not None and not may_create and not os.path.exists(path):
        # SQLite would create an empty file for a mistyped path.
        raise _CommandError("no SQLite database at %r" % db.database, EXIT_UNREACHABLE)
    try:
        _check_database(db)
        db.connect()
    except SessionStoreError as exc:
        raise _CommandError(str(exc), EXIT_UNREACHABLE) from None
    except peewee.ImproperlyConfigured as exc:
        raise _CommandError(
            "cannot use the database URL %s: %s" % (shown, _one_line(exc, url)), EXIT_BAD_URL
        ) from None
    except peewee.DatabaseError as exc:
        if _failure_kind(exc) == "login":
            raise _CommandError(
                "the database refused the log-in (wrong user, password or database name?): "
                "%s" % _one_line(exc, url),
                EXIT_REFUSED,
            ) from None
        if isinstance(exc, peewee.ProgrammingError) or _POSTGRES_BAD_SETTING.search(_one_line(exc)):
            raise _CommandError(
                "cannot use the database URL %s: %s" % (shown, _one_line(exc, url)), EXIT_BAD_URL
            ) from None
        raise _CommandError(
            "cannot reach the database: %s" % _one_line(exc, url), EXIT_UNREACHABLE
        ) from None
    except Exception as exc:  # the driver refused an option of the URL's (?charset=nope, ?connect_timeout=0)
        raise _CommandError(
            "cannot use the database URL %s: the driver refused its options: %s"
            % (shown, _one_line(exc, url) or type(exc).__name__),
            EXIT_BAD_URL,
        ) from None
    return db


def _run_command(args: Any, out: Any, err: Any) -> None:
    try:
        _check_identifier(args.table, "--table", _MAX_IDENTIFIER - len(_INDEX_SUFFIX))
        _check_identifier(args.sid_field, "--sid-field")
    except ValueError as exc:
        raise _CommandError(str(exc), EXIT_USAGE) from None
    user_key = getattr(args, "user_key", None)
    if user_key is not None:
        try:
            _user_path(user_key)
        except ValueError as exc:
            raise _CommandError("--user-key: %s" % exc, EXIT_USAGE) from None
    if getattr(args, "user", None) is not None and user_key is None:
        raise _CommandError(
            "--user needs --user-key KEY (or PEEWEE_SESSIONS_USER_KEY): the session key "
            "that holds the user's id, such as user_id or passport.user",
            EXIT_USAGE,
        )
    if args.command == "destroy":
        _check_destroy_args(args)
    if args.command == "sql" and args.dialect:
        statements = create_table_sql(args.dialect, args.table, args.sid_field, user_key)
        print(";\n".join(statements) + ";", file=out)
        return
    db = _open_database(args.db, may_create=args.command == "create-table")
    try:
        if args.command == "sql":
            print(";\n".join(create_table_sql(db, args.table, args.sid_field, user_key)) + ";", file=out)
            return
        if args.command == "clear" and not args.yes:
            raise _CommandError(
                "clear deletes every session in %r: run it again with --yes" % args.table, EXIT_USAGE
            )
        existed = db.table_exists(args.table)
        store = PeeweeSessionStore(
            db,
            table_name=args.table,
            sid_field_name=args.sid_field,
            create_table=args.command == "create-table",
            clear_interval=0,
            user_key=user_key
            if args.command == "create-table" or getattr(args, "user", None) is not None
            else None,
        )
        _COMMANDS[args.command](store, args, out, err, existed)
    except TableMissingError:
        if existed:  # the table is there, without the index --user-key needs
            raise _CommandError(
                "the table %r has no user index for --user-key %s: add it with "
                "`create-table --user-key %s`" % (args.table, user_key, user_key),
                EXIT_NO_TABLE,
            ) from None
        raise _CommandError(
            "the table %r does not exist (create it with `create-table`)" % args.table, EXIT_NO_TABLE
        ) from None
    except SessionStoreUnavailable as exc:
        raise _CommandError(str(exc), EXIT_UNREACHABLE) from None
    except SessionStoreError as exc:
        raise _CommandError(str(exc), EXIT_ERROR) from None
    except peewee.DatabaseError as exc:  # a statement outside the store's own (table_exists)
        raise _CommandError(str(_translated(exc)), EXIT_ERROR) from None
    finally:
        with contextlib.suppress(Exception):  # a connection already lost: nothing to close
            db.close()


def _create_table(store: PeeweeSessionStore, args: Any, out: Any, err: Any, existed: bool) -> None:
    print("table %s %s" % (store.table_name, "already exists" if existed else "created"), file=out)
    if store.user_key is not None:
        print(
            "index %s%s on user_key %s is there" % (store.table_name, _USER_INDEX_SUFFIX, store.user_key),
            file=out,
        )


def _sweep(store: PeeweeSessionStore, args: Any, out: Any, err: Any, existed: bool) -> None:
    if args.batch < 1:
        raise _CommandError("--batch must be at least 1", EXIT_USAGE)
    store.sweep_batch_size = args.batch
    show_progress = err.isatty()
    deleted = 0
    for count in store.sweep_batches():
        deleted += count
        if show_progress:
            print("\rswept %d..." % deleted, end="", file=err, flush=True)
    if show_progress:
        print(file=err)
    print("swept %d expired sessions" % deleted, file=out)


def _stats(store: PeeweeSessionStore, args: Any, out: Any, err: Any, existed: bool) -> None:
    stats = store.stats()
    if args.json:
        print(
            json.dumps(
                {
                    key: _iso_z(value) if isinstance(value, datetime.datetime) else value
                    for key, value in stats.items()
                }
            ),
            file=out,
        )
        return
    for key, value in stats.items():
        if isinstance(value, datetime.datetime):
            value = _iso_z(value)
        elif value is None:
            value = "not reported" if key == "table_bytes" else "-"
        print("%-15s %s" % (key.replace("_", " ") + ":", value), file=out)


def _check_destroy_args(args: Any) -> None:
    """`destroy SID...` or `destroy --user ID [--keep SID]`: usage errors before any connection."""
    if args.user is None:
        if not args.sids:
            raise _CommandError("destroy needs session ids, or --user ID (with --user-key)", EXIT_USAGE)
        if args.keep is not None:
            raise _CommandError("--keep goes with --user", EXIT_USAGE)
        return
    if args.sids:
        raise _CommandError("give session ids or --user, not both", EXIT_USAGE)
    if args.keep is not None and not _is_valid_sid(args.keep):
        raise _CommandError("--keep: not a session id: %r" % args.keep, EXIT_USAGE)
    _cli_user_id(args.user)


def _destroy(store: PeeweeSessionStore, args: Any, out: Any, err: Any, existed: bool) -> None:
    if args.user is not None:
        deleted = store.destroy_sessions_of(_cli_user_id(args.user), keep=args.keep)
        print("destroyed %d sessions of user %s" % (deleted, args.user), file=out)
        return
    for sid in args.sids:
        if not _is_valid_sid(sid):
            raise _CommandError("not a session id: %r" % sid, EXIT_USAGE)
    deleted = sum(store.destroy(sid) for sid in args.sids)
    print("destroyed %d of %d sessions" % (deleted, len(args.sids)), file=out)


def _cli_user_id(user: str) -> str:
    try:
        return _user_id_text(user)  # a str: it matches an int id too (compared as text)
    except ValueError as exc:
        raise _CommandError("--user: %s" % exc, EXIT_USAGE) from None


def _sessions(store: PeeweeSessionStore, args: Any, out: Any, err: Any, existed: bool) -> None:
    found = store.sessions_of(_cli_user_id(args.user))
    if args.json:
        print(json.dumps(found), file=out)
        return
    rows = []
    for sid, sess in found.items():
        cookie = sess.get("cookie")
        rows.append((str(cookie.get("expires") or "-") if isinstance(cookie, dict) else "-", sid))
    for expires, sid in sorted(rows):
        print("%-11s expires %s" % (sid[:8] + "...", expires), file=out)  # a whole id is a credential
    print("%d sessions of user %s" % (len(found), args.user), file=out)


def _clear(store: PeeweeSessionStore, args: Any, out: Any, err: Any, existed: bool) -> None:
    print("cleared %d sessions" % store.clear(), file=out)


_COMMANDS = {
    "create-table": _create_table,
    "sweep": _sweep,
    "stats": _stats,
    "destroy": _destroy,
    "clear": _clear,
    "sessions": _sessions,
}


def main(argv: Optional[list[str]] = None) -> int:
    """`peewee-sessions` and `python -m peewee_sessions`: returns the exit code."""
    args = _argument_parser().parse_args(argv)
    try:
        _run_command(args, sys.stdout, sys.stderr)
    except _CommandError as exc:
        print("peewee-sessions: %s" % _one_line(exc, args.db), file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `peewee-sessions sql | head -1`: the reader has gone, and so may we
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error as Python exits
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
