"""The table: connect-session-knex's schema, run-time models, identifiers, time zones, existing tables."""

import datetime
import time

import peewee
import pytest

from conftest import drop_table, open_database, open_pooled_database
from peewee_sessions import PeeweeSessionStore, TableMissingError, build_session_model

UTC = datetime.timezone.utc
SESS = {"cookie": {"originalMaxAge": 60000, "expires": "2099-01-01T00:00:00.000Z"}, "n": 1}

EXPECTED_TYPES = {  # (sid, sess, expired) as each database reports them
    "sqlite": ("VARCHAR(255)", "TEXT", "DATETIME"),
    "postgresql": ("character varying", "json", "timestamp with time zone"),
    "mysql": ("varchar", ("json", "longtext"), "datetime"),
}


def columns(db, table):
    with db.connection_context():
        return {c.name: c for c in db.get_columns(table)}


def index_names(db, table):
    with db.connection_context():
        return {index.name for index in db.get_indexes(table)}


def test_columns_match_connect_session_knex(backend, db, store):
    cols = columns(db, store.table_name)
    assert list(cols) == ["sid", "sess", "expired"]
    for name, expected in zip(cols, EXPECTED_TYPES[backend]):
        expected = expected if isinstance(expected, tuple) else (expected,)
        assert cols[name].data_type.lower() in [e.lower() for e in expected], name
        assert cols[name].null is False, name
    assert cols["sid"].primary_key


def test_expired_index_is_named_after_the_table(db, store):
    assert store.table_name + "_expired_index" in index_names(db, store.table_name)


def test_two_stores_on_one_database_get_their_own_table_and_index(db, make_store, table_name):
    first = make_store(table_name=table_name + "_a", sid_field_name="session_id")
    second = make_store(table_name=table_name + "_b", sid_field_name="token")
    first.set("x", SESS)
    second.set("x", dict(SESS, n=2))
    assert first.get("x")["n"] == 1 and second.get("x")["n"] == 2
    assert first.table_name + "_expired_index" in index_names(db, first.table_name)
    assert second.table_name + "_expired_index" in index_names(db, second.table_name)
    assert list(columns(db, first.table_name))[0] == "session_id"
    assert list(columns(db, second.table_name))[0] == "token"
    assert first.model is not second.model
    assert first.model.sid.column_name == "session_id"


def test_the_model_is_usable_with_peewee(store):
    store.set("x", SESS)
    row = store.model.get(store.model.sid == "x")
    assert row.sess == SESS
    assert row.expired == datetime.datetime(2099, 1, 1, tzinfo=UTC)


def test_create_table_false_names_the_missing_table(db, table_name):
    with pytest.raises(TableMissingError, match=table_name):
        PeeweeSessionStore(db, table_name=table_name, create_table=False, clear_interval=0)


def test_create_table_false_uses_an_existing_table(make_store, table_name):
    make_store().set("x", SESS)
    assert make_store(create_table=False).get("x") == SESS


def test_creating_an_existing_table_is_harmless(make_store):
    make_store().set("x", SESS)
    assert make_store().get("x") == SESS


@pytest.mark.parametrize("name", ["", "1abc", "bad name", "x;drop table y", 'q"uote', "a-b", "s.t", "ü", "x" * 64, None, 5])
def test_identifiers_must_be_plain(db, name):
    with pytest.raises(ValueError):
        PeeweeSessionStore(db, table_name=name, clear_interval=0)
    with pytest.raises(ValueError):
        PeeweeSessionStore(db, sid_field_name=name, clear_interval=0)


def test_build_session_model_needs_no_database():
    model = build_session_model(None, "sessions", "sid")
    assert model._meta.table_name == "sessions"


def test_a_database_proxy_initialized_later(backend, tmp_path, table_name):
    proxy = peewee.DatabaseProxy()
    store = PeeweeSessionStore(proxy, table_name=table_name, clear_interval=0)  # nothing to talk to yet
    proxy.initialize(open_database(backend, tmp_path))
    try:
        store.set("x", SESS)
        assert store.get("x") == SESS
        soon = {"cookie": {"originalMaxAge": 60000}}  # expires within the hour: compared as text on SQLite
        store.set("soon", soon)
        assert store.get("soon") == soon and store.sweep() == 0
    finally:
        drop_table(proxy, table_name)


def test_a_pooled_database(backend, tmp_path, table_name):
    pooled = open_pooled_database(backend, tmp_path, max_connections=4)
    store = PeeweeSessionStore(pooled, table_name=table_name, clear_interval=0)
    try:
        store.set("x", SESS)
        assert store.get("x") == SESS
        assert not pooled._in_use  # every operation gave its connection back
    finally:
        drop_table(pooled, table_name)
        pooled.close_all()


# -- Time zones: expiry is an instant in UTC whatever the server or the process thinks --------

@pytest.fixture
def new_york_process(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def zoned_database(backend, tmp_path, monkeypatch):
    if backend == "postgresql":  # and a DateStyle psycopg 3 can't parse timestamps in
        # libpq sends these as startup parameters, which PgBouncer passes on (it refuses `options`).
        monkeypatch.setenv("PGTZ", "Asia/Tokyo")
        monkeypatch.setenv("PGDATESTYLE", "SQL,DMY")
        return open_database(backend, tmp_path)
    if backend == "mysql":
        return open_database(backend, tmp_path, init_command="SET time_zone = '+09:00'")
    return open_database(backend, tmp_path)


def test_expiry_is_utc_whatever_the_time_zones(backend, tmp_path, table_name, new_york_process, monkeypatch):
    db = zoned_database(backend, tmp_path, monkeypatch)
    store = PeeweeSessionStore(db, table_name=table_name, clear_interval=0, sweep_batch_size=1)
    try:
        now = datetime.datetime.now(UTC)
        soon = now + datetime.timedelta(minutes=30)
        store.set("soon", {"cookie": {"expires": soon}})
        for sid in ("gone", "gone-too"):
            store.set(sid, {"cookie": {"expires": now - datetime.timedelta(minutes=30)}})
        assert store.get("gone") is None
        assert store.length() == 1
        found, expiry = store.get_with_expiry("soon")
        assert abs(expiry - soon) < datetime.timedelta(seconds=1)
        with store.locked("soon") as (found, expiry):
            assert abs(expiry - soon) < datetime.timedelta(seconds=1)
        stats = store.stats()
        assert (stats["live"], stats["expired"]) == (1, 2)
        assert abs(stats["soonest_expiry"] - soon) < datetime.timedelta(seconds=1) and stats["latest_expiry"] == stats["soonest_expiry"]
        with db.connection_context():
            if backend == "postgresql":
                assert db.execute_sql("SHOW TimeZone").fetchone()[0] == "Asia/Tokyo"  # PGTZ took
                raw = db.execute_sql("SELECT to_char(expired AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') "
                                     "FROM %s WHERE sid = 'soon'" % table_name).fetchone()[0]
                assert raw == (now + datetime.timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M")
            else:
                raw = db.execute_sql("SELECT expired FROM %s WHERE sid = 'soon'" % table_name).fetchone()[0]
                raw = raw if isinstance(raw, str) else raw.isoformat()
                assert raw[:16].replace(" ", "T") == (now + datetime.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M")
        assert store.sweep() == 2 and store.length() == 1  # a full first batch: PostgreSQL's page walk
    finally:
        drop_table(db, table_name)


# -- A table connect-session-knex made, with rows it wrote -------------------------------------

KNEX_TABLES = {
    "sqlite": ["CREATE TABLE {t} (sid varchar(255) NOT NULL, sess json NOT NULL, expired datetime NOT NULL, "
               "PRIMARY KEY (sid))",
               "CREATE INDEX {t}_expired_index ON {t} (expired)"],
    "postgresql": ["CREATE TABLE {t} (sid varchar(255) NOT NULL PRIMARY KEY, sess json NOT NULL, "
                   "expired timestamptz NOT NULL)",
                   "CREATE INDEX {t}_expired_index ON {t} (expired)"],
    "mysql": ["CREATE TABLE {t} (sid varchar(255) NOT NULL PRIMARY KEY, sess longtext CHARACTER SET utf8mb4 "
              "COLLATE utf8mb4_bin NOT NULL CHECK (json_valid(sess)), expired datetime NOT NULL)",
              "CREATE INDEX {t}_expired_index ON {t} (expired)"],
}
KNEX_EXPIRED = {  # how connect-session-knex writes 2099-03-04 05:06:07.891 UTC, and a past time
    "sqlite": ("2099-03-04T05:06:07.891Z", "2001-01-01T00:00:00.000Z"),
    "postgresql": ("2099-03-04T05:06:07.891Z", "2001-01-01T00:00:00.000Z"),
    "mysql": ("2099-03-04 05:06:07", "2001-01-01 00:00:00"),
}


def test_a_table_made_by_connect_session_knex(backend, db, table_name):
    with db.connection_context():
        for statement in KNEX_TABLES[backend]:
            db.execute_sql(statement.format(t=table_name))
        future, past = KNEX_EXPIRED[backend]
        insert = "INSERT INTO %s (sid, sess, expired) VALUES (%s, %s, %s)" % ((table_name,) + (db.param,) * 3)
        node_sess = '{"cookie":{"originalMaxAge":86400000,"expires":"2099-03-04T05:06:07.891Z","httpOnly":true,"path":"/"},"user":"ann"}'
        db.execute_sql(insert, ("from-node", node_sess, future))
        db.execute_sql(insert, ("old-node", node_sess, past))
    store = PeeweeSessionStore(db, table_name=table_name, create_table=False, clear_interval=0)
    try:
        found, expiry = store.get_with_expiry("from-node")
        assert found["user"] == "ann" and found["cookie"]["originalMaxAge"] == 86400000
        assert abs(expiry - datetime.datetime(2099, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)) < datetime.timedelta(seconds=1)
        assert store.get("old-node") is None
        store.set("from-python", {"cookie": {"expires": "2099-03-04T05:06:07.891Z"}, "user": "bob"})
        assert store.length() == 2
        assert store.sweep() == 1
    finally:
        drop_table(db, table_name)
