"""SessionPlugin through a real WSGI stack (WebTest) on every backend: loading, saving, regenerate, destroy."""

import datetime
import functools
import json

import bottle
import pytest
import webtest

from conftest import Counter, build_app
from peewee_sessions import SessionPlugin, sign_session_id


def session_cookie(test_app):
    return test_app.cookies.get("connect.sid")


def sid_of(test_app):
    """The session id in the client's cookie (WebTest keeps it URL-encoded, as sent)."""
    value = session_cookie(test_app).replace("%3A", ":").replace("%2F", "/").replace("%2B", "+")
    return value[2:value.rindex(".")]


def test_counter_across_requests(web):
    client, _, store = web
    assert [client.get("/count").text for _ in range(3)] == ["1", "2", "3"]
    assert store.get(sid_of(client))["n"] == 3


def test_a_fresh_client_gets_its_own_session(web):
    client, plugin, _ = web
    other = webtest.TestApp(client.app)
    client.get("/count"), client.get("/count")
    assert other.get("/count").text == "1"
    assert sid_of(other) != sid_of(client)


def test_stored_json_is_express_sessions_shape(web):
    client, _, store = web
    client.get("/count")
    stored = store.get(sid_of(client))
    assert list(stored) == ["cookie", "n"]
    assert list(stored["cookie"]) == ["originalMaxAge", "expires", "httpOnly", "path", "sameSite"]
    assert stored["cookie"]["originalMaxAge"] == 86400000
    assert stored["cookie"]["expires"].endswith("Z")


def test_an_empty_new_session_is_not_stored_and_sets_no_cookie(web):
    client, _, store = web
    response = client.get("/read")
    assert response.text == "None"
    assert "Set-Cookie" not in response.headers
    assert store.length() == 0


def test_save_uninitialized_stores_empty_sessions(make_web):
    client, plugin, _ = make_web(save_uninitialized=True)
    response = client.get("/read")
    assert "Set-Cookie" in response.headers
    assert plugin.store.length() == 1


def test_nested_changes_are_saved(make_web):
    client, plugin, app = make_web()

    @app.get("/nest")
    def nest(session):
        session.setdefault("cart", {"items": []})["items"].append(len(session["cart"]["items"]))
        return json.dumps(session["cart"])

    client.get("/nest"), client.get("/nest")
    assert json.loads(client.get("/nest").text) == {"items": [0, 1, 2]}


def test_unchanged_session_is_not_rewritten(web):
    client, _, store = web
    client.get("/count")
    counter = Counter(store)
    response = client.get("/read")
    assert response.text == "1"
    assert [sql.split()[0] for sql in counter.statements] == ["SELECT"]  # the read, no write: touch not due
    assert "Set-Cookie" not in response.headers


def test_regenerate_keeps_data_under_a_new_id(make_web):
    client, plugin, app = make_web()

    @app.post("/login")
    def login(session):
        session.regenerate()
        session["user"] = "ann"
        return session.id

    client.get("/count")
    old_sid = sid_of(client)
    new_sid = client.post("/login").text
    assert new_sid != old_sid and sid_of(client) == new_sid
    assert plugin.store.get(old_sid) is None
    assert plugin.store.get(new_sid)["n"] == 1 and plugin.store.get(new_sid)["user"] == "ann"


def test_destroy_deletes_the_row_and_clears_the_cookie(make_web):
    client, plugin, app = make_web()

    @app.post("/logout")
    def logout(session):
        session.destroy()
        return "bye"

    client.get("/count")
    sid = sid_of(client)
    response = client.post("/logout")
    assert plugin.store.get(sid) is None
    cleared = response.headers["Set-Cookie"]
    assert cleared.startswith("connect.sid=;") and "1970" in cleared
    assert "connect.sid" not in client.cookies
    assert client.get("/count").text == "1"


def test_data_stored_after_destroy_starts_a_new_session(make_web):
    client, plugin, app = make_web()

    @app.post("/logout-and-flash")
    def logout(session):
        session.destroy()
        session["flash"] = "logged out"

    client.get("/count")
    old = sid_of(client)
    client.post("/logout-and-flash")
    assert sid_of(client) != old
    assert plugin.store.get(sid_of(client)) == {**plugin.store.get(sid_of(client)), "flash": "logged out"}
    assert "n" not in plugin.store.get(sid_of(client))


@pytest.mark.parametrize("ending", ["redirect", "abort", "raise_response", "return_response", "raise_error"])
def test_the_cookie_survives_every_way_out(make_web, ending):
    client, plugin, app = make_web()

    @app.get("/out")
    def out(session):
        session["done"] = ending
        if ending == "redirect":
            bottle.redirect("/elsewhere")
        if ending == "abort":
            bottle.abort(403, "no")
        if ending == "raise_response":
            raise bottle.HTTPResponse("raised", status=202)
        if ending == "return_response":
            return bottle.HTTPResponse("returned", status=201)
        raise bottle.HTTPError(409, "conflict")

    response = client.get("/out", expect_errors=True)
    expected = {"redirect": 303, "abort": 403, "raise_response": 202, "return_response": 201, "raise_error": 409}
    assert response.status_int == expected[ending] or (ending == "redirect" and response.status_int == 302)
    assert "connect.sid" in client.cookies
    assert plugin.store.get(sid_of(client))["done"] == ending


def test_an_uncaught_exception_saves_nothing(make_web):
    client, plugin, app = make_web()

    @app.get("/crash")
    def crash(session):
        session["n"] = 1000
        raise RuntimeError("boom")

    client.get("/count")
    response = client.get("/crash", expect_errors=True)
    assert response.status_int == 500
    assert plugin.store.get(sid_of(client))["n"] == 1


def test_an_unstorable_value_fails_the_request_and_keeps_the_stored_session(make_web):
    client, plugin, app = make_web()

    @app.get("/bad")
    def bad(session):
        session["n"] = 50
        session["when"] = object()

    client.get("/count")
    assert client.get("/bad", expect_errors=True).status_int == 500
    assert plugin.store.get(sid_of(client))["n"] == 1


def test_explicit_save_then_redirect(make_web):
    client, plugin, app = make_web()

    @app.get("/save")
    def save(session):
        session["saved"] = True
        session.save()
        assert plugin.store.get(session.id)["saved"] is True
        return "ok"

    client.get("/save")
    assert plugin.store.get(sid_of(client))["saved"] is True


def test_reload_drops_unsaved_changes(make_web):
    client, plugin, app = make_web()

    @app.get("/reload")
    def reload(session):
        session["n"] = 99
        session.reload()
        return str(session["n"])

    client.get("/count")
    assert client.get("/reload").text == "1"


def test_remember_me_lifetime_is_saved_with_the_session(make_web):
    client, plugin, app = make_web(max_age=3600)

    @app.get("/remember")
    def remember(session):
        session.cookie.max_age = 30 * 86400

    client.get("/count")
    client.get("/remember")
    assert plugin.store.get(sid_of(client))["cookie"]["originalMaxAge"] == 30 * 86400 * 1000
    client.get("/count")
    assert plugin.store.get(sid_of(client))["cookie"]["originalMaxAge"] == 30 * 86400 * 1000


@pytest.mark.parametrize("configured_max_age", [None, 3600])
def test_a_lifetime_set_then_saved_mid_request_moves_the_row_expiry(make_web, configured_max_age):
    """A "remember me" log-in: regenerate, set a 30-day lifetime, save before the callback ends."""
    client, plugin, app = make_web(max_age=configured_max_age)

    @app.get("/login")
    def login(session):
        session.regenerate()
        session["user"] = "zoe"
        session.cookie.max_age = 30 * 86400
        session.save()

    client.get("/count")
    client.get("/login")
    _, expiry = plugin.store.get_with_expiry(sid_of(client))
    expected = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    assert abs((expiry - expected).total_seconds()) < 60


def test_resave_writes_unchanged_sessions(make_web):
    client, plugin, _ = make_web(resave=True)
    client.get("/count")
    counter = Counter(plugin.store)
    client.get("/read")
    assert [sql.split()[0] for sql in counter.statements] == ["SELECT", "UPDATE"]  # a patch of the stored row


def test_touch_after_throttles_expiry_writes(make_web):
    client, plugin, _ = make_web(touch_after=0)
    client.get("/count")
    counter = Counter(plugin.store)
    client.get("/read")
    assert [sql.split()[0] for sql in counter.statements] == ["SELECT", "UPDATE"]


def test_rolling_sends_the_cookie_every_time(make_web):
    client, _, _ = make_web(rolling=True)
    client.get("/count")
    assert "Set-Cookie" in client.get("/read").headers
    assert "Set-Cookie" in client.get("/unused").headers  # rolling loads even an untouched session


def test_rolling_per_route(make_web):
    client, _, app = make_web()

    @app.get("/keepalive", session={"rolling": True})
    def keepalive(session):
        return "ok"

    client.get("/count")
    assert "Set-Cookie" not in client.get("/read").headers
    assert "Set-Cookie" in client.get("/keepalive").headers


def test_app_config_under_session_does_not_disturb_routes(make_web):
    client, _, app = make_web()
    app.config.load_dict({"session": {"secret": "app's own", "table": "x"}})  # an INI [session] section
    assert client.get("/count").text == "1"


def test_route_options_from_an_ini_file_are_read_as_their_types(make_web, tmp_path):
    client, plugin, app = make_web()
    (tmp_path / "app.ini").write_text("[session]\nrolling = false\ntouch_after = 0\n")
    app.config.load_config(str(tmp_path / "app.ini"))  # every value a string: "false", "0"
    client.get("/count")
    counter = Counter(plugin.store)
    response = client.get("/read")
    assert "Set-Cookie" not in response.headers  # "false" is false, not a true string
    assert [sql.split()[0] for sql in counter.statements] == ["SELECT", "UPDATE"]  # "0": touched at once


@pytest.mark.parametrize("option, value", [("rolling", "maybe"), ("touch_after", "soon"), ("touch_after", -1)])
def test_a_route_option_that_means_nothing_is_refused_by_name(make_web, option, value):
    client, _, app = make_web()
    app.catchall = False  # the error itself, not Bottle's 500 page

    @app.get("/odd", session={option: value})
    def odd(session):
        return "never"

    with pytest.raises(ValueError, match="session.%s" % option):
        client.get("/odd")


def test_callbacks_without_the_keyword_are_not_wrapped(web):
    client, plugin, _ = web
    route = [r for r in client.app.routes if r.rule == "/plain"][0]
    assert plugin.apply(route.callback, route) is route.callback


def test_decorated_callbacks_get_the_session(make_web):
    client, _, app = make_web()

    def logged(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            return "logged:" + func(*args, **kwargs)
        return wrapper

    @app.get("/decorated")
    @logged
    def decorated(session):
        session["x"] = 1
        return session.id[:3]

    assert client.get("/decorated").text.startswith("logged:")
    assert "connect.sid" in client.cookies


def test_url_arguments_still_arrive(make_web):
    client, _, app = make_web()

    @app.get("/hello/<name>")
    def hello(name, session):
        session["last"] = name
        return "hello " + name

    assert client.get("/hello/ann").text == "hello ann"


@pytest.mark.parametrize("skip", ["name", "instance"])
def test_skip(make_web, skip):
    client, plugin, app = make_web()

    @app.get("/skipped", skip=["session" if skip == "name" else plugin])
    def skipped(session="not injected"):
        return session

    assert client.get("/skipped").text == "not injected"


def test_two_plugins_on_one_app(store, make_store, table_name):
    app, user_plugin = build_app(store)
    admin_store = make_store(table_name=table_name + "_admin")
    app.install(SessionPlugin(admin_store, secret="admin secret", keyword="admin",
                                             cookie_name="admin.sid"))

    @app.get("/both")
    def both(session, admin):
        session["user"] = "ann"
        admin["level"] = 9
        return "ok"

    client = webtest.TestApp(app)
    client.get("/both")
    assert {"connect.sid", "admin.sid"} <= set(client.cookies)
    assert store.length() == 1 and admin_store.length() == 1
    assert client.get("/count").text == "1"


def test_the_same_keyword_twice_is_a_plugin_error(store):
    app, _ = build_app(store)
    with pytest.raises(bottle.PluginError, match="session"):
        app.install(SessionPlugin(store, secret="x"))


def test_a_session_from_an_old_secret_is_kept_and_re_signed(store):
    old_client = webtest.TestApp(build_app(store, secret="old secret")[0])
    old_client.get("/count")
    sid = sid_of(old_client)
    rotated = webtest.TestApp(build_app(store, secret=["new secret", "old secret"])[0])
    rotated.set_cookie("connect.sid", old_client.cookies["connect.sid"])
    assert rotated.get("/count").text == "2"
    assert rotated.cookies["connect.sid"].replace("%3A", ":").replace("%2F", "/").replace("%2B", "+") == \
        sign_session_id(sid, "new secret")


def test_plugin_made_store_is_closed_with_the_app(db, table_name):
    plugin = SessionPlugin(db, secret="x", table_name=table_name, clear_interval=30)
    app = bottle.Bottle()
    app.install(plugin)
    plugin.store.get("warm")  # starts the sweeper
    app.close()
    assert plugin.store._sweeper._stopped
    from conftest import drop_table
    drop_table(db, table_name)


@pytest.mark.parametrize("secret", [None, "", [], [""], ["ok", None], 42])
def test_a_missing_or_empty_secret_is_refused(store, secret):
    with pytest.raises(ValueError, match="secret"):
        SessionPlugin(store, secret=secret)


def test_a_returned_session_is_serialized_with_its_data(make_web):
    client, _, app = make_web()

    @app.get("/api/session")
    def api(session):
        return session  # Bottle's JSON plugin serializes it after the plugin has finished

    client.get("/count")
    client.get("/count")
    assert json.loads(client.get("/api/session").text) == {"n": 2}


def test_json_dumps_of_an_untouched_session_loads_it(make_web):
    client, _, app = make_web()

    @app.get("/dump")
    def dump(session):
        return json.dumps(session)

    client.get("/count")
    assert json.loads(client.get("/dump").text) == {"n": 1}


def test_copies_are_plain_dicts(make_web):
    import copy

    client, _, app = make_web()

    @app.get("/copies")
    def copies(session):
        shallow, deep = copy.copy(session), copy.deepcopy(session)
        assert type(shallow) is dict and type(deep) is dict
        return json.dumps([shallow, deep, dict(session), {**session}])

    client.get("/count")
    assert json.loads(client.get("/copies").text) == [{"n": 1}] * 4


def test_using_the_session_after_the_response_is_an_error_not_a_leak(make_web):
    client, plugin, app = make_web()
    seen = []

    @app.get("/stream")
    def stream(session):
        def body():
            try:
                yield str(session.get("n"))
            except RuntimeError as exc:
                seen.append(exc)
                yield "late"
        return body()

    client.get("/count")
    plugin.store.db.close()
    assert client.get("/stream").text == "late"
    assert "after its response" in str(seen[0])
    assert plugin.store.db.is_closed()


def test_a_failed_load_leaves_the_session_usable(make_web, monkeypatch):
    from peewee_sessions import SessionStoreError

    client, plugin, app = make_web()

    @app.get("/tolerant")
    def tolerant(session):
        try:
            session.get("n")
        except SessionStoreError:
            return "store down"
        return "loaded %s" % session.get("n")

    client.get("/count")
    real = plugin.store.load
    monkeypatch.setattr(plugin.store, "load", lambda sid: (_ for _ in ()).throw(SessionStoreError("down")))
    assert client.get("/tolerant").text == "store down"
    monkeypatch.setattr(plugin.store, "load", real)
    assert client.get("/tolerant").text == "loaded 1"


def test_a_lifetime_change_reaches_the_browser(make_web):
    client, plugin, app = make_web(max_age=3600)

    @app.get("/forget-me")
    def forget_me(session):
        session.cookie.max_age = None  # a browser-session cookie from now on

    client.get("/count")
    response = client.get("/forget-me")
    assert "Expires" not in response.headers["Set-Cookie"]
    assert plugin.store.get(sid_of(client))["cookie"]["expires"] is None


def test_expires_is_read_only(make_web):
    client, _, app = make_web()

    @app.get("/set-expires")
    def set_expires(session):
        session.cookie.expires = None

    assert client.get("/set-expires", expect_errors=True).status_int == 500


def test_a_cookie_signed_with_an_old_secret_is_re_signed_on_a_read(store):
    old_client = webtest.TestApp(build_app(store, secret="old secret")[0])
    old_client.get("/count")
    rotated = webtest.TestApp(build_app(store, secret=["new secret", "old secret"])[0])
    response = rotated.get("/read", headers={"Cookie": "connect.sid=" + old_client.cookies["connect.sid"]})
    assert response.text == "1"
    re_signed = response.headers["Set-Cookie"].split(";")[0]
    assert "Set-Cookie" not in rotated.get("/read", headers={"Cookie": re_signed}).headers  # once is enough
