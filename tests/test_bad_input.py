"""Bad input gets a clear error and loses nothing; a damaged row reads as no session and is logged."""

import datetime
import json
import logging

import pytest

SESS = {"cookie": {"expires": "2099-01-01T00:00:00.000Z"}, "n": 1}


@pytest.mark.parametrize("sid", [None, 1, b"bytes", "", "x" * 256, "nul\x00byte", "line\nbreak", "\ud800"])
def test_a_bad_session_id_is_a_value_error(store, sid):
    for call in (lambda: store.get(sid), lambda: store.set(sid, SESS), lambda: store.touch(sid, SESS),
                 lambda: store.destroy(sid)):
        with pytest.raises(ValueError, match="session id"):
            call()


def test_the_longest_session_id_is_fine(store):
    store.set("x" * 255, SESS)
    assert store.get("x" * 255) == SESS


@pytest.mark.parametrize("sess", [None, [], "text", 42, [("a", 1)]])
def test_a_session_that_is_not_a_dict_is_a_type_error(store, sess):
    with pytest.raises(TypeError, match="dict"):
        store.set("sid", sess)


def cyclic():
    value = {"a": []}
    value["a"].append(value)
    return value


@pytest.mark.parametrize("value, path", [
    (object(), "session['bad']"),
    ({1, 2}, "session['bad']"),
    ({"deep": [1, 2, b"bytes"]}, "session['bad']['deep'][2]"),
    (float("nan"), "session['bad']"),
    ([float("inf")], "session['bad'][0]"),
    (cyclic(), "session['bad']['a'][0]"),
])
def test_an_unstorable_value_names_its_key_and_keeps_the_stored_session(store, value, path):
    store.set("sid", SESS)
    with pytest.raises(TypeError) as caught:
        store.set("sid", dict(SESS, n=2, bad=value))
    assert path in str(caught.value)
    assert store.get("sid") == SESS


@pytest.mark.parametrize("bad, path", [
    ({"text": "ok \ud800 ok"}, "session['text']"),
    ({"list": [1, {"\udc00": 1}]}, "session['list'][1] (the key '\\udc00')"),
    ({"\udfff": True}, "session (the key '\\udfff')"),
], ids=["value", "nested key", "key"])
def test_a_lone_surrogate_is_kept_where_the_database_holds_it_and_refused_by_name_where_not(backend, store, bad, path):
    store.set("sid", SESS)
    if backend != "mysql":  # SQLite and PostgreSQL's json keep it, as JSON.stringify writes it
        store.set("sid", dict(SESS, **bad))
        assert store.get("sid") == dict(SESS, **bad)
        assert store.patch("sid", {"n": 2}) and store.get("sid") == dict(SESS, n=2, **bad)
        return
    for save in (lambda: store.set("sid", dict(SESS, n=2, **bad)), lambda: store.patch("sid", dict(bad, n=2))):
        with pytest.raises(TypeError, match="lone UTF-16 surrogate") as caught:  # not "database unavailable"
            save()
        assert str(caught.value).startswith(path + " cannot be stored")
        assert store.get("sid") == SESS
    store.set("sid", dict(SESS, emoji="\U0001f389"))  # a real pair is fine
    assert store.get("sid")["emoji"] == "\U0001f389"


@pytest.mark.parametrize("cookie", [{"expires": "next tuesday"}, {"expires": 12}, {"maxAge": "long"},
                                    {"maxAge": 10 ** 30}, {"maxAge": True}, {"maxAge": float("nan")},
                                    {"expires": "9999-12-31T23:59:59-14:00"},
                                    {"expires": "0001-01-01T00:00:00+14:00"},
                                    {"expires": datetime.datetime.max.replace(tzinfo=datetime.timezone(
                                        datetime.timedelta(hours=-14)))}])
def test_a_bad_expiry_is_a_value_error(store, cookie):
    with pytest.raises(ValueError, match="cookie"):
        store.set("sid", {"cookie": cookie})
    assert store.get("sid") is None


def write_raw(store, sid, sess_text):
    store.set(sid, SESS)
    with store.connection():
        store.db.execute_sql("UPDATE %s SET sess = %s WHERE sid = %s" % (store.table_name, store.db.param,
                                                                          store.db.param), (sess_text, sid))


@pytest.mark.parametrize("text", ["[1, 2]", '"a string"', "42", "null", "true"])
def test_a_row_that_is_not_a_json_object_reads_as_no_session(store, caplog, text):
    write_raw(store, "damaged", text)
    store.set("fine", SESS)
    with caplog.at_level(logging.WARNING, logger="peewee_sessions"):
        assert store.get("damaged") is None
        assert store.all() == {"fine": SESS}
    assert any("not a JSON object" in record.message for record in caplog.records)


def test_a_patch_of_a_damaged_row_finds_no_session_and_leaves_the_row(store, caplog):
    write_raw(store, "damaged", '"a string"')
    with caplog.at_level(logging.WARNING, logger="peewee_sessions"):
        assert store.patch("damaged", {"n": 1}) is False
    assert any("not a JSON object" in record.message for record in caplog.records)
    assert store.length() == 1 and store.get("damaged") is None


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])  # MariaDB's json_valid refuses 32 levels or more
def test_a_row_nested_past_what_python_parses_reads_as_no_session(backend, store, caplog):
    write_raw(store, "deep", '{"a": %s}' % ("[" * 5000 + "]" * 5000))
    with caplog.at_level(logging.WARNING, logger="peewee_sessions"):
        assert store.get("deep") is None
    assert any("not valid JSON" in record.message for record in caplog.records)


@pytest.mark.parametrize("original_max_age", [1e300, pytest.param(10 ** 400, id="10**400"), -5, 0, "60000", True])
def test_a_damaged_stored_lifetime_gives_the_session_the_configured_one(make_web, original_max_age):
    client, plugin, _ = make_web(max_age=3600)
    client.get("/count")
    [(sid, sess)] = plugin.store.all().items()
    sess["cookie"]["originalMaxAge"] = original_max_age
    write_raw(plugin.store, sid, json.dumps(sess))
    assert client.get("/count").text == "2"
    assert plugin.store.get(sid)["cookie"]["originalMaxAge"] == 3600000


@pytest.mark.parametrize("text", ['{"n": 1e400}', '{"n": [-1E999]}'])
def test_a_row_with_a_number_past_a_float_reads_as_no_session(store, caplog, text):
    # Valid JSON, which every database keeps; Python would read it as inf and could never write it back.
    write_raw(store, "damaged", text)
    with caplog.at_level(logging.WARNING, logger="peewee_sessions"):
        assert store.get("damaged") is None and store.patch("damaged", {"n": 2}) is False
    assert any("out of range" in record.message for record in caplog.records)


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL's json and MariaDB's json_valid refuse invalid JSON
@pytest.mark.parametrize("text", ['{"n": NaN}', '{"n": -Infinity}'])
def test_a_row_with_a_constant_json_has_not_reads_as_no_session(backend, store, caplog, text):
    write_raw(store, "damaged", text)
    with caplog.at_level(logging.WARNING, logger="peewee_sessions"):
        assert store.get("damaged") is None
    assert any("is not JSON" in record.message for record in caplog.records)


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL's json and MariaDB's json_valid refuse invalid JSON
def test_a_row_with_invalid_json_reads_as_no_session(backend, store, caplog):
    write_raw(store, "damaged", "{not json")
    with caplog.at_level(logging.WARNING, logger="peewee_sessions"):
        assert store.get("damaged") is None
        assert store.all() == {}
    assert any("not valid JSON" in record.message for record in caplog.records)


def nested(levels, inner=1):
    """A value nesting `levels` levels of arrays and objects, alternately."""
    value = inner
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


def test_a_session_nested_as_deep_as_mariadb_takes_is_kept(store):
    sess = dict(SESS, deep=nested(30), text="[[[[" * 40 + "{\\\"" * 20)  # with the session: 31 levels
    store.set("sid", sess)
    assert store.get("sid") == sess
    assert store.patch("sid", {"deeper": nested(30)}) and store.get("sid")["deeper"] == nested(30)


@pytest.mark.parametrize("levels", [31, 40, 1500], ids=["one too many", "40", "past the encoder"])
def test_a_value_nested_too_deep_is_refused_by_name_everywhere(store, levels):
    """MariaDB's JSON refuses a document nested 32 levels deep: refused alike on every database, by key."""
    store.set("sid", SESS)
    for save in (lambda: store.set("sid", dict(SESS, n=2, deep=nested(levels))),
                 lambda: store.patch("sid", {"n": 2, "deep": nested(levels)}),
                 lambda: store.set("new", {"cookie": {}, "deep": [nested(levels)]})):
        with pytest.raises(TypeError, match=r"session\['deep'\]"):  # not RecursionError, not "unavailable"
            save()
    assert store.get("sid") == SESS and store.get("new") is None


def test_a_too_deep_session_is_refused_by_the_plugin_and_the_stored_one_kept(make_web):
    client, plugin, app = make_web()

    @app.get("/deep")
    def deep(session):
        session["deep"] = nested(40)

    client.get("/count")
    assert client.get("/deep", expect_errors=True).status_int == 500  # the app's bug, not a 503
    assert client.get("/count").text == "2"


def test_a_check_failure_is_a_store_error_never_unavailable(backend, store, monkeypatch):
    """MariaDB's json_valid CHECK fails with 4025, which PyMySQL raises as an OperationalError."""
    from peewee_sessions import SessionStoreError, SessionStoreUnavailable

    store.set("sid", SESS)
    monkeypatch.setattr("peewee_sessions.MAX_JSON_DEPTH", 100)  # let the database judge the document
    too_deep = dict(SESS, deep=nested(40))
    if backend != "mysql":  # SQLite's text and PostgreSQL's json take it
        store.set("sid", too_deep)
        assert store.get("sid") == too_deep
        return
    with pytest.raises(SessionStoreError) as caught:
        store.set("sid", too_deep)
    assert not isinstance(caught.value, SessionStoreUnavailable) and "4025" in str(caught.value)
    assert store.get("sid") == SESS


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])  # SQLite's sess is text: it keeps anything
def test_invalid_json_refused_by_the_database_is_a_store_error_never_unavailable(backend, store):
    from peewee_sessions import SessionStoreError, SessionStoreUnavailable

    store.set("sid", SESS)
    dialect = store.dialect
    expired = dialect.db_time(__import__("datetime").datetime(2099, 1, 1))
    with pytest.raises(SessionStoreError) as caught:
        store._execute(dialect.set, dialect.set_params("sid", "{not json", expired))
    assert not isinstance(caught.value, SessionStoreUnavailable)
    # One line: PostgreSQL's "LINE 1: ..." would quote the statement, and the session in it, into logs.
    assert "\n" not in str(caught.value) and "not json" not in str(caught.value)
    assert store.get("sid") == SESS


@pytest.mark.parametrize("key", [1, None, True, 2.5, ("a", "b")])
def test_a_session_key_that_is_not_a_str_is_refused_by_name_and_the_stored_session_kept(make_web, key):
    """json.dumps would write it bare ({"n":1,1:"x"}): no JSON, which SQLite kept and MariaDB refused."""
    client, plugin, app = make_web()

    @app.get("/odd-key")
    def odd_key(session):
        session[key] = "x"

    client.get("/count")
    response = client.get("/odd-key", expect_errors=True)
    assert response.status_int == 500
    assert client.get("/count").text == "2"
    with pytest.raises(TypeError, match="session key .* cannot be stored"):
        plugin.store.patch(next(iter(plugin.store.all())), {key: "x"})


@pytest.mark.parametrize("backend", ["mysql"])
def test_a_session_past_max_allowed_packet_is_refused_not_an_outage(make_store):
    """The server would drop the connection ("gone away"): bad input, refused before any statement."""
    store = make_store(max_session_size=None)
    store.set("s", SESS)
    big = "x" * (store.dialect.max_packet // 2 + 1)
    with pytest.raises(ValueError, match="max_allowed_packet"):
        store.set("s", dict(SESS, big=big))
    assert store.get("s") == SESS
