"""Hostile input, property-based: whatever Cookie header arrives, no 5xx, no session but the signed one.

hypothesis generates Cookie headers (random text, many cookies, duplicates, quotes, forged and
valid signatures, ids with SQL metacharacters) against a real app on every database.
"""

import logging
import urllib.parse

import pytest
import webtest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SECRET, build_app
from peewee_sessions import sign_session_id

VICTIM = "victim-session-id-0123456789abcdef"
EXPIRED = "expired-session-id-0123456789abcde"

# Cookie values an attacker might try: the victim's id unsigned, signed with a guessed secret,
# with its signature bent; ids full of SQL; valid signatures over ids the store doesn't have.
crafted = st.sampled_from([
    VICTIM, "s:" + VICTIM, sign_session_id(VICTIM, "guessed"), sign_session_id(VICTIM, SECRET)[:-2] + "AA",
    sign_session_id("' OR 1=1 --", SECRET), sign_session_id(EXPIRED, SECRET), sign_session_id("unknown", SECRET),
    sign_session_id('"; DROP TABLE sessions; --', SECRET), "s:" + "A" * 5000 + ".x", "%", "%%41", '"', '""',
])
values = st.one_of(crafted, st.text(max_size=60), st.text(alphabet="s:.%=;\" \\/+A", max_size=40),
                   crafted.map(lambda v: urllib.parse.quote(v, safe="")))
names = st.one_of(st.just("connect.sid"), st.just("connect.sid "), st.just("CONNECT.SID"), st.text(max_size=12))
cookie_headers = st.lists(st.tuples(names, values), max_size=6).map(
    lambda pairs: "; ".join("%s=%s" % pair for pair in pairs))


def first_session_cookie(header):
    for part in header.split(";"):
        name, eq, value = part.partition("=")
        if eq and name.strip() == "connect.sid":
            return value.strip()
    return None


def is_valid_victim_cookie(header):
    """Whether the header's first connect.sid cookie is the victim's, correctly signed."""
    value = first_session_cookie(header)
    if value is None:
        return False
    value = value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value
    try:
        value = urllib.parse.unquote(value, errors="strict") if "%" in value else value
    except UnicodeDecodeError:
        return False
    return value == sign_session_id(VICTIM, SECRET)


@pytest.fixture
def hostile_app(store):
    store.set(VICTIM, {"cookie": {"originalMaxAge": 3600000}, "n": 100})
    store.set(EXPIRED, {"cookie": {"expires": "2001-01-01T00:00:00.000Z"}, "n": 200})
    app, _ = build_app(store)
    return webtest.TestApp(app), store


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=cookie_headers)
def test_any_cookie_header_gives_the_signed_session_or_a_new_one(hostile_app, header):
    client, store = hostile_app
    try:
        response = client.get("/count", headers={"Cookie": header}, expect_errors=True)
    except UnicodeEncodeError:
        return  # WSGI headers are latin-1: such a header cannot reach an app at all
    assert response.status_int == 200, response.text
    if is_valid_victim_cookie(header):
        assert response.text == "101"
        store.set(VICTIM, {"cookie": {"originalMaxAge": 3600000}, "n": 100})  # put it back for the next example
    else:
        assert response.text == "1"  # a new session
        new_value = urllib.parse.unquote(response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1])
        new_sid = new_value[2:new_value.rindex(".")]
        assert new_sid not in (VICTIM, EXPIRED) and new_sid not in header  # never the id the client proposed
        store.destroy(new_sid)
    assert store.get(EXPIRED) is None and store.get(VICTIM)["n"] == 100


# -- Damaged rows read as no session and are logged -------------------------------------------

ABSURD_EXPIRY = {  # written by hand, past what the store would ever write
    "sqlite": "not a date at all",
    "postgresql": "infinity",
    "mysql": "9999-12-31 23:59:59",
}


def test_an_absurd_expiry_reads_as_no_session(backend, store, caplog):
    store.set("damaged", {"cookie": {}, "n": 1})
    with store.connection():
        store.db.execute_sql("UPDATE %s SET expired = %s WHERE sid = 'damaged'" % (store.table_name, store.db.param),
                             (ABSURD_EXPIRY[backend],))
    with caplog.at_level(logging.WARNING, logger="peewee_sessions"):
        assert store.get("damaged") is None
    assert any("unreadable or absurd" in record.message for record in caplog.records)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_infinite_expiries_break_neither_stats_nor_the_sweep(make_store):
    """PostgreSQL takes 'infinity' and '-infinity' as timestamps, which no datetime holds (psycopg 3 refuses them)."""
    store = make_store(sweep_batch_size=1)  # a full first batch: the second row goes in the page walk
    for sid, expiry in (("forever", "infinity"), ("never-1", "-infinity"), ("never-2", "-infinity")):
        store.set(sid, {"cookie": {}})
        with store.connection():
            store.db.execute_sql("UPDATE %s SET expired = %%s WHERE sid = %%s" % store.table_name, (expiry, sid))
    stats = store.stats()
    assert (stats["live"], stats["expired"]) == (0, 2)  # "forever" is absurd: not live, as get() says
    assert store.get("forever") is None
    assert store.sweep() == 2 and store.length() == 0


FAR_EXPIRY = {  # later than get() reads as a session (36,500 days from now), written as each side writes it
    "sqlite": "2200-01-01T00:00:00.000Z",
    "postgresql": "2200-01-01 00:00:00+00",
    "mysql": "2200-01-01 00:00:00",
}


@pytest.mark.parametrize("cookie", [{"expires": "2200-01-01T00:00:00.000Z"},
                                    {"expires": "9999-12-31T23:59:59.999Z"},
                                    {"maxAge": 36501 * 86400000}, {"expires": "1900-01-01T00:00:00.000Z"}])
def test_an_expiry_get_would_never_return_is_refused_at_set_touch_and_patch(store, cookie):
    store.set("sid", {"cookie": {}, "n": 1})
    before = store.get_with_expiry("sid")
    for save in (lambda: store.set("sid", {"cookie": cookie, "n": 2}),
                 lambda: store.touch("sid", {"cookie": cookie}),
                 lambda: store.patch("sid", {"cookie": cookie, "n": 2}),
                 lambda: store.set("new", {"cookie": cookie})):
        with pytest.raises(ValueError, match="36,500 days"):
            save()
    assert store.get_with_expiry("sid") == before and store.get("new") is None


def test_a_stored_absurd_expiry_is_live_for_none_of_get_length_all_and_stats(backend, store, caplog):
    store.set("fine", {"cookie": {"expires": "2099-01-01T00:00:00.000Z"}})
    store.set("far", {"cookie": {}})
    with store.connection():
        store.db.execute_sql("UPDATE %s SET expired = %s WHERE sid = 'far'"
                             % (store.table_name, store.db.param), (FAR_EXPIRY[backend],))
    with caplog.at_level(logging.WARNING, logger="peewee_sessions"):
        assert store.get("far") is None
    assert store.length() == 1 and list(store.all()) == ["fine"]
    stats = store.stats()
    assert stats["live"] == 1 and stats["latest_expiry"] == stats["soonest_expiry"]
    assert stats["latest_expiry"].year == 2099


@pytest.mark.parametrize("backend", ["sqlite"])  # the other databases' expired column holds only timestamps
@pytest.mark.parametrize("damage", [b"\x00\xff", b"2099-01-01T00:00:00.000Z", 12.5,
                                    "2099-99-99T00:00:00.000Z"],
                         ids=["blob", "text as a blob", "number", "no such date"])
def test_a_damaged_sqlite_expiry_reads_as_no_session_everywhere(backend, web, caplog, damage):
    client, plugin, store = web
    store.set("damaged", {"cookie": {}, "n": 5})
    store.set("fine", {"cookie": {"expires": "2099-01-01T00:00:00.000Z"}})
    with store.connection():
        store.db.execute_sql("UPDATE %s SET expired = ? WHERE sid = 'damaged'" % store.table_name, (damage,))
    cookie = "connect.sid=" + urllib.parse.quote(sign_session_id("damaged", SECRET), safe="")
    with caplog.at_level(logging.WARNING, logger="peewee_sessions"):
        assert store.get("damaged") is None
        assert client.get("/count", headers={"Cookie": cookie}).text == "1"  # a new session, not a 500
        assert "damaged" not in store.all() and "fine" in store.all()
        stats = store.stats()
    if not isinstance(damage, float):  # a number sorts below any text: an expired row, as SQLite compares
        assert any("unreadable or absurd" in record.message for record in caplog.records)
    assert stats["latest_expiry"] is None or stats["latest_expiry"].year == 2099
    assert store.get("fine") is not None


def test_a_damaged_row_gives_the_visitor_a_new_session(backend, web, caplog):
    client, plugin, store = web
    store.set("damaged", {"cookie": {}, "n": 5})
    with store.connection():
        store.db.execute_sql("UPDATE %s SET sess = %s WHERE sid = 'damaged'" % (store.table_name, store.db.param),
                             ("[1, 2, 3]",))
    cookie = "connect.sid=" + urllib.parse.quote(sign_session_id("damaged", SECRET), safe="")
    with caplog.at_level(logging.WARNING, logger="peewee_sessions"):
        assert client.get("/count", headers={"Cookie": cookie}).text == "1"
    assert any("not a JSON object" in record.message for record in caplog.records)


def test_a_value_over_the_size_limit_fails_the_request_and_keeps_the_session(make_store):
    store = make_store(max_session_size=2000)
    app, _ = build_app(store)

    @app.get("/big")
    def big(session):
        session["blob"] = "x" * 5000

    client = webtest.TestApp(app)
    client.get("/count")
    assert client.get("/big", expect_errors=True).status_int == 500
    assert client.get("/count").text == "2"
