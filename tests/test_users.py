"""A user's sessions (issue 22): PeeweeSessionStore(user_key=...), sessions_of() and destroy_sessions_of().

On every backend: the user index is read from the session JSON (so Node's rows count), queries use it,
`keep` spares the current session, a save racing the destroy does not bring a session back, and without
user_key the schema stays exactly connect-session-knex's.
"""

import datetime
import json
import re
import threading
import time

import bottle
import peewee
import pytest
import webtest

import peewee_sessions
from conftest import SECRET, drop_table
from peewee_sessions import (PeeweeSessionStore, SessionPlugin, TableMissingError, UserKeyError,
                             create_table_sql)
from test_cli import cli  # noqa: F401 (fixtures: the command line, the Node app)
from test_node_interop import Browser, node_sqlite3_built, start_node  # noqa: F401

UTC = datetime.timezone.utc
LATER = "2099-01-01T00:00:00.000Z"
EARLIER = "2000-01-01T00:00:00.000Z"


def session(expires=LATER, **values):
    cookie = {"originalMaxAge": 60000, "expires": expires, "httpOnly": True, "path": "/"}
    return dict({"cookie": cookie}, **values)


def index_names(db, table):
    with db.connection_context():
        return {index.name for index in db.get_indexes(table)}


def test_many_users_with_many_sessions(make_store):
    store = make_store(user_key="user_id")
    for user in range(12):
        for device in range(4):
            store.set("u%d-d%d" % (user, device), session(user_id=user, device=device))
    store.set("anonymous", session(n=1))
    for user in range(12):
        found = store.sessions_of(user)
        assert sorted(found) == ["u%d-d%d" % (user, device) for device in range(4)]
        assert all(sess == store.get(sid) for sid, sess in found.items())  # each as get() returns it
        assert found["u%d-d0" % user]["cookie"]["expires"] == LATER  # when it ends
    assert store.sessions_of(99) == {}
    assert store.destroy_sessions_of(3) == 4
    assert store.sessions_of(3) == {} and len(store.sessions_of(4)) == 4 and store.get("anonymous")
    assert len(store) == 11 * 4 + 1


def test_keep_spares_the_current_session_and_expired_rows_go_too(make_store):
    store = make_store(user_key="user_id")
    for sid in ("laptop", "phone", "tablet"):
        store.set(sid, session(user_id="ada"))
    store.set("old", session(expires=EARLIER, user_id="ada"))  # expired, not swept yet
    store.set("grace", session(user_id="grace"))
    assert sorted(store.sessions_of("ada")) == ["laptop", "phone", "tablet"]  # live ones only
    assert store.destroy_sessions_of("ada", keep="laptop") == 3  # phone, tablet and the expired row
    assert list(store.sessions_of("ada")) == ["laptop"]
    assert store.get("grace") and store.stats()["expired"] == 0
    assert store.destroy_sessions_of("ada", keep="not-a-session-of-ada") == 1
    assert store.sessions_of("ada") == {} and store.destroy_sessions_of("ada") == 0


def test_an_integer_and_its_text_are_the_same_user(make_store):
    store = make_store(user_key="user_id")
    store.set("int", session(user_id=42))
    store.set("str", session(user_id="42"))
    store.set("neg", session(user_id=-7))
    store.set("other", session(user_id="042"))
    assert sorted(store.sessions_of(42)) == sorted(store.sessions_of("42")) == ["int", "str"]
    assert list(store.sessions_of("-7")) == ["neg"] and list(store.sessions_of("042")) == ["other"]
    assert store.destroy_sessions_of("42", keep="int") == 1 and list(store.sessions_of(42)) == ["int"]


def test_other_values_are_no_user(make_store):
    store = make_store(user_key="user_id")
    values = [True, False, 4.2, 42.0, 1e3, None, {"id": 42}, [42], ""]
    for number, value in enumerate(values):
        store.set("odd-%d" % number, session(user_id=value))
    store.set("missing", session(n=1))
    for user in ("42", 42, "1000", "1", "0", "true", "True", "false", "4.2", "42.0", "null", "None", "{}"):
        assert store.sessions_of(user) == {}, user
        assert store.destroy_sessions_of(user) == 0
    assert len(store) == len(values) + 1


def test_text_is_compared_exactly(make_store):
    store = make_store(user_key="user_id")
    for sid, user in [("plain", "alice"), ("upper", "Alice"), ("space", "alice "), ("accent", "zoë"),
                      ("quote", "o'brien\"; --"), ("long", "x" * 255), ("too-long", "y" * 256)]:
        store.set(sid, session(user_id=user))
    assert list(store.sessions_of("alice")) == ["plain"]
    assert list(store.sessions_of("Alice")) == ["upper"]
    assert list(store.sessions_of("alice ")) == ["space"]
    assert list(store.sessions_of("zoë")) == ["accent"]
    assert list(store.sessions_of("o'brien\"; --")) == ["quote"]
    assert list(store.sessions_of("x" * 255)) == ["long"]
    with pytest.raises(ValueError, match="255"):
        store.sessions_of("y" * 256)  # not indexed (MySQL/MariaDB's column holds 255 characters)


def test_a_nested_path(make_store):
    store = make_store(user_key="passport.user")
    store.set("a", session(passport={"user": 7}))
    store.set("b", session(passport={"user": "7"}))
    store.set("c", session(passport="7"))  # not an object: no user
    store.set("d", session(user=7))
    store.set("e", session(passport={"user": {"id": 7}}))
    assert sorted(store.sessions_of(7)) == ["a", "b"]
    assert store.destroy_sessions_of(7, keep="b") == 1 and store.get("c") and store.get("d")


def test_a_deeper_path(make_store):
    store = make_store(user_key="auth.who.id")
    store.set("a", session(auth={"who": {"id": "u1"}}))
    store.set("b", session(auth={"who": "u1"}))
    assert list(store.sessions_of("u1")) == ["a"]


def test_bad_user_ids_are_refused(make_store):
    store = make_store(user_key="user_id")
    for user in (None, True, 4.2, ["x"], b"x"):
        with pytest.raises(TypeError, match="str or an int"):
            store.sessions_of(user)
        with pytest.raises(TypeError):
            store.destroy_sessions_of(user)
    with pytest.raises(ValueError):
        store.sessions_of("")
    with pytest.raises(ValueError):
        store.destroy_sessions_of("x", keep="")


@pytest.mark.parametrize("key", ["", ".", "a.", ".a", "a..b", "a b", "a'b", "a-b", "$.a", "1a",
                                 "a;DROP TABLE x", "a\"b", "é", "a." * 8 + "a", "x" * 65, 42, b"user_id"])
def test_user_key_is_validated(key):
    with pytest.raises(ValueError, match="user_key"):  # before anything is made
        PeeweeSessionStore(peewee.DatabaseProxy(), user_key=key, table_name="t_never_made", clear_interval=0)
    for dialect in ("sqlite", "postgresql", "mysql"):
        with pytest.raises(ValueError, match="user_key"):
            create_table_sql(dialect, user_key=key)


def test_without_user_key_the_methods_say_what_is_missing(store):
    store.set("a", session(user_id=1))
    for call in (lambda: store.sessions_of(1), lambda: store.destroy_sessions_of(1, keep="a")):
        with pytest.raises(UserKeyError, match="user_key") as raised:
            call()
        assert isinstance(raised.value, peewee_sessions.SessionStoreError)
    assert store.get("a")


def test_without_user_key_the_schema_is_connect_session_knex_s(backend, db, make_store, table_name):
    plain = create_table_sql(db, table_name)
    with_users = create_table_sql(db, table_name, user_key="user_id")
    assert with_users[:len(plain)] == plain and len(with_users) == len(plain) + 1
    assert table_name + "_user_index" in with_users[-1] and table_name + "_user_index" not in " ".join(plain)
    assert create_table_sql(backend, table_name) == plain

    make_store()
    with db.connection_context():
        assert [column.name for column in db.get_columns(table_name)] == ["sid", "sess", "expired"]
    primary = {"PRIMARY", "sqlite_autoindex_%s_1" % table_name, table_name + "_pkey"}
    assert index_names(db, table_name) - primary == {table_name + "_expired_index"}


def test_create_table_adds_the_index_to_an_existing_table(backend, db, make_store, table_name):
    plain = make_store()
    plain.set("before", session(user_id="ada"))
    plain.close()
    with pytest.raises(TableMissingError, match="user-key user_id"):
        make_store(user_key="user_id", create_table=False)
    store = make_store(user_key="user_id")  # create_table=True: the index is added
    assert table_name + "_user_index" in index_names(db, table_name)
    assert list(store.sessions_of("ada")) == ["before"]
    assert list(make_store(user_key="user_id", create_table=False).sessions_of("ada")) == ["before"]
    with pytest.raises(UserKeyError, match="another key"):
        make_store(user_key="passport.user")  # the index is user_id's


def test_the_printed_sql_makes_a_working_index(backend, db, make_store, table_name):
    with db.connection_context():
        for statement in create_table_sql(db, table_name, user_key="passport.user"):
            db.execute_sql(statement)
    store = make_store(user_key="passport.user", create_table=False)  # finds the index it would make
    store.set("a", session(passport={"user": 5}))
    assert list(store.sessions_of("5")) == ["a"]


def fill(store, users, per_user):
    """users * per_user live sessions, each user's own, in bulk (multi-row INSERTs)."""
    expires = datetime.datetime(2099, 1, 1, tzinfo=UTC)
    rows = ({"sid": "u%d-%d" % (user, device), "sess": session(user_id=user, n=device), "expired": expires}
            for user in range(users) for device in range(per_user))
    with store.db.connection_context():
        with store.db.atomic():
            for batch in peewee.chunked(rows, 1000):
                store.model.insert_many(batch).execute()


def plan(backend, db, sql, params):
    """EXPLAIN's plan as text, and (MySQL) the index and access type of each step."""
    if backend == "sqlite":
        rows = db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return "\n".join(row[-1] for row in rows), []
    cursor = db.execute_sql("EXPLAIN " + sql, params)
    rows = cursor.fetchall()
    text = "\n".join(" ".join(str(value) for value in row) for row in rows)
    if backend == "postgresql":
        return text, []
    names = [column[0].lower() for column in cursor.description]
    return text, [(row[names.index("key")], row[names.index("type")]) for row in rows]


def test_queries_use_the_index(backend, db, make_store, table_name):
    store = make_store(user_key="user_id")
    fill(store, users=2000, per_user=10)
    dialect, index = store.dialect, table_name + "_user_index"
    with db.connection_context():
        db.execute_sql({"sqlite": "ANALYZE", "postgresql": "ANALYZE %s" % table_name,
                        "mysql": "ANALYZE TABLE %s" % table_name}[backend])
        queries = ((dialect.sessions_of, ("1234", dialect.now())),
                   (dialect.destroy_sessions_of, ("1234", "")))
        for sql, params in queries:
            text, steps = plan(backend, db, sql, params)
            assert index in text, text
            if backend == "sqlite":
                assert not re.search(r"\bSCAN\b", text), text
            elif backend == "postgresql":
                assert "Seq Scan" not in text, text
            else:
                assert steps == [(index, "ref")] or steps == [(index, "range")], text
    assert len(store.sessions_of(1234)) == 10
    assert store.destroy_sessions_of(1234, keep="u1234-0") == 9
    assert len(store) == 20000 - 9


@pytest.mark.parametrize("stale", [False, True], ids=["unchanged", "changed-meanwhile"])
def test_a_save_racing_destroy_sessions_of_does_not_bring_the_session_back(make_store, stale):
    """The destroy deletes the row and holds its transaction open; a request of that user then saves the
    session (its compare-and-set UPDATE, or when the row changed since it was read, its merge under the
    row lock), and waits for the destroy to commit: the row stays gone."""
    store = make_store(user_key="user_id")
    store.set("current", session(user_id=7))
    store.set("victim", session(user_id=7, n=1))
    token = store.load("victim").token
    if stale:
        store.patch("victim", {"elsewhere": True})  # another request wrote it since: save() merges
    deleted, started = threading.Barrier(2), threading.Barrier(2)
    results, errors = {}, []

    def destroy():
        try:
            with store.transaction():
                results["destroyed"] = store.destroy_sessions_of(7, keep="current")
                deleted.wait(10)
                started.wait(10)
                time.sleep(0.3)  # the save is waiting for the row (SQLite: the write lock) meanwhile
                results["held_until"] = time.monotonic()  # the DELETE commits after this
        except BaseException as exc:
            errors.append(exc)
            deleted.abort()
            started.abort()

    def save():
        try:
            deleted.wait(10)
            started.wait(10)
            sess = session(user_id=7, n=2)
            results["saved"] = store.save("victim", json.dumps(sess, separators=(",", ":")), {"n": "2"}, (),
                                          datetime.datetime(2099, 1, 1, tzinfo=UTC), token)
            results["saved_at"] = time.monotonic()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=destroy), threading.Thread(target=save)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert results["destroyed"] == 1 and results["saved"] is None
    assert results["saved_at"] > results["held_until"]  # the save waited for the destroy to commit
    assert store.get("victim") is None and list(store.sessions_of(7)) == ["current"]


def node_login(node, path):
    browser = Browser(None, node)
    browser.node(path)
    return browser


@pytest.mark.parametrize("user_key, login, user", [("user", "/login?name=grace", "grace"),
                                                    ("passport.user", "/passport-login?id=42", 42)])
def test_sessions_written_by_node_are_found_and_ended(start_node, make_store, user_key, login, user):
    node = start_node()  # connect-session-knex makes the table, as in an Express app deployed first
    store = make_store(user_key=user_key)  # adds the index to it
    laptop, phone = node_login(node, login), node_login(node, login)  # Node's inserts work with the index
    someone_else = node_login(node, "/login?name=alan")
    phone.node("/incr")  # and its updates

    found = store.sessions_of(user)
    assert sorted(found) == sorted([laptop.sid, phone.sid])
    assert found[phone.sid]["n"] == 1 and re.match(r"\d{4}-.*Z$", found[phone.sid]["cookie"]["expires"])
    assert store.sessions_of(str(user)) == found

    assert store.destroy_sessions_of(user, keep=laptop.sid) == 1
    assert json.loads(phone.node("/whoami")) == {}  # signed out on the phone
    assert json.loads(laptop.node("/whoami")) != {} and list(store.sessions_of(user)) == [laptop.sid]
    assert json.loads(someone_else.node("/whoami")) == {"user": "alan"}


# -- The command line: `sessions --user` and `destroy --user` ---------------------------------

def test_the_command_line_lists_and_ends_a_user_s_sessions(cli, make_store, monkeypatch):
    code, out, err = cli("create-table", "--user-key", "passport.user")
    assert code == 0 and "on user_key passport.user is there" in out, err
    store = make_store(user_key="passport.user", create_table=False)
    for sid in ("AAAAAAAAone", "BBBBBBBBtwo", "CCCCCCCCthree"):
        store.set(sid, session(passport={"user": 42}, n=1))
    store.set("DDDDDDDDother", session(passport={"user": 43}))

    code, out, err = cli("sessions", "--user", "42", "--user-key", "passport.user")
    assert code == 0, err
    assert out.splitlines() == ["AAAAAAAA... expires %s" % LATER, "BBBBBBBB... expires %s" % LATER,
                                "CCCCCCCC... expires %s" % LATER, "3 sessions of user 42"]
    monkeypatch.setenv("PEEWEE_SESSIONS_USER_KEY", "passport.user")  # read when the parser is made
    code, out, err = cli("sessions", "--json", "--user", "42")
    assert code == 0 and json.loads(out) == store.sessions_of(42), err

    code, out, err = cli("destroy", "--user", "42", "--keep", "AAAAAAAAone")
    assert (code, out) == (0, "destroyed 2 sessions of user 42\n"), err
    assert list(store.sessions_of(42)) == ["AAAAAAAAone"] and store.get("DDDDDDDDother")
    assert cli("destroy", "DDDDDDDDother", "nothing") == (0, "destroyed 1 of 2 sessions\n", "")  # as before


def test_the_command_line_says_what_user_commands_need(cli, make_store, monkeypatch):
    monkeypatch.delenv("PEEWEE_SESSIONS_USER_KEY", raising=False)
    make_store()  # a table without the user index
    for args in (("sessions", "--user", "42"), ("destroy", "--user", "42")):
        code, out, err = cli(*args)
        assert code == peewee_sessions.EXIT_USAGE and "--user-key KEY (or PEEWEE_SESSIONS_USER_KEY)" in err
    code, out, err = cli("sessions", "--user", "42", "--user-key", "user_id")
    assert code == peewee_sessions.EXIT_NO_TABLE and "create-table --user-key user_id" in err
    code, out, err = cli("sessions", "--user", "42", "--user-key", "a'b")
    assert code == peewee_sessions.EXIT_USAGE and "--user-key" in err
    assert cli("destroy")[0] == peewee_sessions.EXIT_USAGE
    assert cli("destroy", "x", "--keep", "y")[0] == peewee_sessions.EXIT_USAGE
    code, out, err = cli("destroy", "x", "--user", "1", "--user-key", "user_id")
    assert code == peewee_sessions.EXIT_USAGE


def test_the_command_line_prints_the_user_index(capsys):
    for dialect in ("sqlite", "postgresql", "mysql"):
        assert peewee_sessions.main(["sql", "--dialect", dialect, "--user-key", "user_id"]) == 0
        out = capsys.readouterr().out
        assert out == ";\n".join(create_table_sql(dialect, user_key="user_id")) + ";\n"
        assert "sessions_user_index" in out


def test_the_plugin_needs_nothing_but_the_id_in_the_session(db, table_name):
    """Bottle: log in on two devices, "log out other devices" on one: the other one has no user now."""
    app = bottle.Bottle()
    plugin = app.install(SessionPlugin(db, secret=SECRET, user_key="user_id", clear_interval=0,
                                       table_name=table_name))
    store = plugin.store

    @app.post("/login")
    def login(session):
        session.regenerate()
        session["user_id"] = int(bottle.request.forms.id)
        return session.id

    @app.get("/me")
    def me(session):
        return str(session.get("user_id"))

    @app.post("/logout-others")
    def logout_others(session):
        return str(store.destroy_sessions_of(session["user_id"], keep=session.id))

    try:
        laptop, phone, other = webtest.TestApp(app), webtest.TestApp(app), webtest.TestApp(app)
        laptop_id = laptop.post("/login", {"id": "42"}).text
        phone_id = phone.post("/login", {"id": "42"}).text
        other.post("/login", {"id": "7"})
        assert sorted(store.sessions_of(42)) == sorted([laptop_id, phone_id])
        assert laptop.post("/logout-others").text == "1"
        assert phone.get("/me").text == "None"  # logged out
        assert laptop.get("/me").text == "42" and other.get("/me").text == "7"
        assert list(store.sessions_of("42")) == [laptop_id]
    finally:
        plugin.close()
        drop_table(db, table_name)


def test_text_a_user_index_can_not_read_is_refused_by_name_and_the_stored_session_kept(make_store):
    """PostgreSQL's user index decodes the JSON, whose text holds no NUL nor lone surrogate: refused at
    save as bad input, naming the key, on every database alike for the user id itself."""
    store = make_store(user_key="user_id")
    store.set("s", session(user_id=7, ok=1))
    if store.dialect.name == "postgresql":
        for value in ("a\x00b", "\ud800"):
            with pytest.raises(TypeError, match="note"):
                store.patch("s", {"note": value})
        assert store.get("s") == session(user_id=7, ok=1)
    with pytest.raises(ValueError, match="NUL"):
        store.sessions_of("a\x00b")
