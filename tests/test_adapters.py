"""Issue 19: one behaviour suite for the three adapters on the three databases, through WebTest.

The same small app is built three times by make_client: in Bottle (SessionPlugin), as a bare WSGI
callable under SessionMiddleware, and in Flask (FlaskSessionInterface). Each route's behaviour is
written once (ROUTES) against the few things the frameworks do differently (Web: the query string,
a redirect, an abort, "remember me"); only /late, which changes the session after its response
started, is written per framework. The tests then run on every adapter x backend pair.

Flask differs in two documented ways, set up or tested explicitly here: a session is a browser-session
cookie until `session.permanent = True` (PERMANENT_SESSION_LIFETIME, 30 days here), and with
SESSION_REFRESH_EACH_REQUEST (Flask's default) a request that brings a cookie loads its session at the
end to learn whether it is permanent (one SELECT, even on a route that never used it).
"""

import datetime
import email.utils
import socket
import sys
import threading
import urllib.parse

import bottle
import falcon
import flask
import peewee
import pytest
import webtest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SECRET, Counter
from peewee_sessions import (FlaskSessionInterface, PeeweeSessionStore, SessionMiddleware, SessionPlugin,
                             sign_session_id)

ADAPTERS = ["bottle", "wsgi", "flask"]
COOKIE = "connect.sid"
ENVIRON_KEY = "peewee_sessions.session"
DAY = 86400
THIRTY_DAYS = 30 * DAY
UTC = datetime.timezone.utc
HTTPS = {"wsgi.url_scheme": "https"}


# -- The app, once, and its three frameworks ---------------------------------------------------


class Web:
    """What a route asks of its framework; each adapter's subclass answers in its own way."""

    def __init__(self, client):
        self.client = client

    def query(self, name, default=None):
        raise NotImplementedError

    def redirect(self, location):
        """Return (or raise) the framework's redirect to location."""
        raise NotImplementedError

    def abort(self, status):
        """Raise the framework's error response with that status."""
        raise NotImplementedError

    def remember(self, session):
        """A "remember me" log-in: the cookie lives 30 days."""
        session.cookie.max_age = THIRTY_DAYS

    def forget(self, session):
        """Back to a cookie that ends with the browser."""
        session.cookie.max_age = None


def count(session, web):
    session["n"] = session.get("n", 0) + 1
    return str(session["n"])


def read(session, web):
    return str(session.get("n"))


def plain(session, web):
    return "no session here"


def unused(session, web):
    return "never looked"


def login(session, web):
    session.regenerate()
    session["user"] = web.query("name", "ann")
    return "welcome " + session["user"]


def logout(session, web):
    session.destroy()
    return "bye"


def redirect_after_set(session, web):
    count(session, web)
    return web.redirect("/read")


def abort_after_set(session, web):
    count(session, web)
    web.abort(403)


def boom(session, web):
    count(session, web)
    raise ValueError("boom")


def remember(session, web):
    web.remember(session)
    return "remembered"


def forget(session, web):
    web.forget(session)
    return "forgotten"


def lifetime(session, web):
    session.cookie.max_age = float(web.query("seconds"))
    return "lifetime set"


def hook(session, web):
    """Runs the test's own code: client.hooks[?name=]."""
    return str(web.client.hooks[web.query("name")](session))


ROUTES = {  # path: (behaviour, whether the route takes the session)
    "/count": (count, True),
    "/read": (read, True),
    "/plain": (plain, False),
    "/unused": (unused, True),
    "/login": (login, True),
    "/logout": (logout, True),
    "/redirect-after-set": (redirect_after_set, True),
    "/abort-after-set": (abort_after_set, True),
    "/boom": (boom, True),
    "/remember": (remember, True),
    "/forget": (forget, True),
    "/lifetime": (lifetime, True),
    "/hook": (hook, True),
}


def late_body(session):
    """A response body that changes the session after the response started: it must raise."""
    yield "started;"
    try:
        session["n"] = 2
    except RuntimeError:
        yield "RuntimeError"
    else:
        yield "no error"


class BottleWeb(Web):
    def query(self, name, default=None):
        return bottle.request.query.getunicode(name, default=default)

    def redirect(self, location):
        bottle.redirect(location)

    def abort(self, status):
        bottle.abort(status, "no")


def bottle_app(client, store, secret, options):
    app = bottle.Bottle()
    app.install(SessionPlugin(store, secret=secret, **options))
    web = BottleWeb(client)
    for path, (behaviour, takes_session) in ROUTES.items():
        if takes_session:
            def callback(session, behaviour=behaviour):
                return behaviour(session, web)
        else:
            def callback(behaviour=behaviour):
                return behaviour(None, web)
        app.route(path, ["GET", "POST"], callback)

    @app.get("/late")
    def late(session):  # Bottle iterates the generator after the plugin finished the session
        session["n"] = 1
        return late_body(session)

    return app


class WsgiRedirect(Exception):
    pass


class WsgiAbort(Exception):
    pass


class WsgiWeb(Web):
    environ = None

    def query(self, name, default=None):
        return urllib.parse.parse_qs(self.environ.get("QUERY_STRING", "")).get(name, [default])[0]

    def redirect(self, location):
        raise WsgiRedirect(location)

    def abort(self, status):
        raise WsgiAbort(status)


def wsgi_app(client, store, secret, options):
    """A bare WSGI callable under SessionMiddleware, inside what a server does with an exception (a 500)."""

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        session = environ[ENVIRON_KEY]
        if path == "/late":
            session["n"] = 1
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [part.encode() for part in late_body(session)]
        if path not in ROUTES:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        behaviour, takes_session = ROUTES[path]
        web = WsgiWeb(client)
        web.environ = environ
        try:
            body = behaviour(session if takes_session else None, web)
        except WsgiRedirect as redirect:
            start_response("303 See Other", [("Location", str(redirect)), ("Content-Type", "text/plain")])
            return [b"see other"]
        except WsgiAbort as abort:
            status = int(str(abort))
            start_response("%d Forbidden" % status, [("Content-Type", "text/plain")])
            return [b"no"]
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return [body.encode()]

    middleware = SessionMiddleware(app, store, secret=secret, **options)

    def server(environ, start_response):
        try:
            return middleware(environ, start_response)
        except Exception:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            return [b"server error"]

    return server


class FlaskWeb(Web):
    def query(self, name, default=None):
        return flask.request.args.get(name, default)

    def redirect(self, location):
        return flask.redirect(location)

    def abort(self, status):
        flask.abort(status)

    def remember(self, session):
        session.permanent = True  # PERMANENT_SESSION_LIFETIME: 30 days here

    def forget(self, session):
        session.permanent = False


def flask_app(client, store, secret, options, config):
    app = flask.Flask(__name__)
    secrets_ = [secret] if isinstance(secret, str) else list(secret)
    app.secret_key = secrets_[0]
    app.config.update(SECRET_KEY_FALLBACKS=secrets_[1:], SESSION_COOKIE_NAME=COOKIE,
                      PERMANENT_SESSION_LIFETIME=datetime.timedelta(seconds=THIRTY_DAYS))
    app.config.update(config or {})
    app.session_interface = FlaskSessionInterface(store, **options)
    web = FlaskWeb(client)
    for path, (behaviour, takes_session) in ROUTES.items():
        def view(behaviour=behaviour, takes_session=takes_session):
            return behaviour(flask.session if takes_session else None, web)
        app.add_url_rule(path, path, view, methods=["GET", "POST"])

    @app.get("/late")
    def late():
        flask.session["n"] = 1
        return flask.Response(flask.stream_with_context(late_body(flask.session)))

    return app


class Client:
    """One browser (WebTest's cookie jar) on an app; `hooks` are the /hook route's functions."""

    def __init__(self, adapter, store, wsgi=None):
        self.adapter, self.store = adapter, store
        self.hooks = {}
        self.wsgi = wsgi

    def fresh(self):
        """Another browser on the same app."""
        other = Client(self.adapter, self.store, self.wsgi)
        other.hooks = self.hooks
        return other.start()

    def start(self):
        self.app = webtest.TestApp(self.wsgi)
        return self

    def get(self, path, status=200, **kwargs):
        return self.app.get(path, status=status, **kwargs)

    def raw(self, path, cookie_value, status=200, **kwargs):
        """A request carrying this connect.sid value and nothing from the jar."""
        self.app.reset()
        return self.app.get(path, headers={"Cookie": "%s=%s" % (COOKIE, cookie_value)}, status=status, **kwargs)

    @property
    def sid(self):
        value = self.app.cookies.get(COOKIE)
        return None if value is None else sid_of_value(value)


@pytest.fixture(params=ADAPTERS)
def adapter(request):
    return request.param


def build_client(adapter, store, config=None, **options):
    """A Client on the same small app in that framework, on that store.

    options are SessionPlugin's (secret: a str or a list, first signs); config is the Flask app's config.
    """
    secret = options.pop("secret", SECRET)
    client = Client(adapter, store)
    if adapter == "bottle":
        client.wsgi = bottle_app(client, store, secret, options)
    elif adapter == "wsgi":
        client.wsgi = wsgi_app(client, store, secret, options)
    else:
        client.wsgi = flask_app(client, store, secret, options, config)
    return client.start()


@pytest.fixture
def make_client(store):
    """make_client(adapter, config=None, **options): build_client on the test's store."""
    return lambda adapter, config=None, **options: build_client(adapter, store, config, **options)


# -- Reading responses ---------------------------------------------------------------------------


def sid_of_value(value):
    """The id in a signed cookie value as sent ("s%3A<sid>.<signature>")."""
    value = urllib.parse.unquote(value)
    return value[2:value.rindex(".")]


def session_cookie(response, name=COOKIE):
    """The session's Set-Cookie header, or None."""
    found = [h for h in response.headers.getall("Set-Cookie") if h.startswith(name + "=")]
    assert len(found) <= 1, found
    return found[0] if found else None


def cookie_value(header):
    return header.split(";")[0].split("=", 1)[1]


def attributes(header):
    """{lower-cased attribute name: value, or True for a flag}."""
    found = {}
    for part in header.split(";")[1:]:
        name, equals, value = part.strip().partition("=")
        found[name.lower()] = value if equals else True
    return found


def expires_in(header):
    """Seconds from now to the cookie's Expires (None without one)."""
    expires = attributes(header).get("expires")
    if expires is None:
        return None
    return (email.utils.parsedate_to_datetime(expires) - datetime.datetime.now(UTC)).total_seconds()


def row_expires_in(store, sid):
    _, expiry = store.get_with_expiry(sid)
    return (expiry - datetime.datetime.now(UTC)).total_seconds()


def writes(counter):
    return [s for s in counter.statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


# -- The behaviour suite: every test on every adapter x backend -----------------------------------


def test_counter_across_requests(make_client, adapter, store):
    client = make_client(adapter)
    assert [client.get("/count").text for _ in range(3)] == ["1", "2", "3"]
    assert client.get("/read").text == "3"
    assert store.get(client.sid)["n"] == 3


def test_a_fresh_client_is_isolated(make_client, adapter):
    client = make_client(adapter)
    client.get("/count"), client.get("/count")
    other = client.fresh()
    assert other.get("/read").text == "None"
    assert other.get("/count").text == "1"
    assert other.sid != client.sid
    assert client.get("/read").text == "2"


FORGED = [
    "garbage",
    "s%3Anot-signed",
    "s:%s.%s" % ("a" * 32, "b" * 43),  # well formed, wrong signature
    urllib.parse.quote(sign_session_id("a" * 32, "another secret"), safe=""),
    urllib.parse.quote(sign_session_id("never-stored-" + "x" * 20, SECRET), safe=""),  # signed, not in the store
    urllib.parse.quote(sign_session_id("", SECRET), safe=""),
    urllib.parse.quote(sign_session_id("x" * 300, SECRET), safe=""),  # signed, too long for an id
    "s%3A" + "A" * 8000,  # oversized
    "%E0%A4%A",  # a broken percent escape
    "\u00e9\u00ff\u00a0",  # Latin-1, as a WSGI server passes bytes that are not ASCII
]


def test_forged_garbled_or_oversized_cookies_give_a_new_session(make_client, adapter, store):
    client = make_client(adapter)
    client.get("/count")
    real = client.sid
    for forged in FORGED:
        response = client.raw("/count", forged)
        assert response.text == "1", forged
        new_sid = sid_of_value(cookie_value(session_cookie(response)))
        assert new_sid != real and "never-stored" not in new_sid
        assert store.get(new_sid)["n"] == 1
    assert store.get(real)["n"] == 1 and store.length() == 1 + len(FORGED)


LATIN1_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=300)


def test_no_cookie_value_gives_a_5xx(make_client, adapter, store):
    """A property: whatever connect.sid holds, the answer is a new session, never an error."""
    client = make_client(adapter)
    client.get("/count")
    real = client.sid
    values = st.one_of(
        LATIN1_HEADER_TEXT,
        st.builds(lambda sid, sig: "s:%s.%s" % (sid, sig), LATIN1_HEADER_TEXT, LATIN1_HEADER_TEXT),
        st.builds(lambda sid: urllib.parse.quote(sign_session_id(sid, SECRET), safe=""), st.text(max_size=80)),
        st.builds(lambda text: text * 40, LATIN1_HEADER_TEXT),  # up to 12,000 characters
    )

    @settings(max_examples=25, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(values)
    def check(value):
        value = value.strip().replace(";", "").replace(",", "")  # one cookie, as a header can carry it
        response = client.raw("/count", value, status="*")
        assert response.status_int == 200 and response.text == "1"
        header = session_cookie(response)
        assert header is not None and sid_of_value(cookie_value(header)) != real

    check()
    assert store.get(real)["n"] == 1


def test_secret_rotation(make_client, adapter, store):
    old = make_client(adapter, secret="old secret")
    old.get("/count")
    sid, old_value = old.sid, old.app.cookies[COOKIE]
    rotated = make_client(adapter, secret=["new secret", "old secret"])
    response = rotated.raw("/read", old_value)
    assert response.text == "1"  # the old secret still verifies...
    new_value = cookie_value(session_cookie(response))  # ...and the response re-signs with the new one
    assert urllib.parse.unquote(new_value) == sign_session_id(sid, "new secret")
    assert session_cookie(rotated.raw("/read", new_value)) is None  # signed with the newest: nothing to send
    only_new = make_client(adapter, secret="new secret")
    assert only_new.raw("/read", new_value).text == "1"
    assert only_new.raw("/read", old_value).text == "None"
    assert store.get(sid)["n"] == 1


def test_regenerate_and_destroy(make_client, adapter, store):
    client = make_client(adapter)
    client.get("/count")
    before = client.sid
    assert client.get("/login?name=bob").text == "welcome bob"
    after = client.sid
    assert after != before and store.get(before) is None
    assert {key: value for key, value in store.get(after).items() if key != "cookie"} == {"n": 1, "user": "bob"}
    response = client.get("/logout")
    assert response.text == "bye"
    header = session_cookie(response)
    assert cookie_value(header) == "" and "1970" in attributes(header)["expires"]
    assert store.get(after) is None and store.length() == 0
    assert client.sid is None
    assert client.get("/read").text == "None"


def test_a_redirect_or_an_abort_keeps_the_cookie_and_the_change(make_client, adapter, store):
    client = make_client(adapter)
    response = client.get("/redirect-after-set", status=(302, 303))
    assert session_cookie(response) is not None  # a new session's first response carries its cookie
    assert response.follow().text == "1"
    response = client.fresh().get("/abort-after-set", status=403)
    assert session_cookie(response) is not None
    assert store.get(sid_of_value(cookie_value(session_cookie(response))))["n"] == 1
    client.get("/abort-after-set", status=403)  # an existing session's change too
    assert client.get("/read").text == "2"


def test_an_uncaught_exception_saves_nothing(make_client, adapter, store):
    client = make_client(adapter)
    client.get("/count")
    response = client.get("/boom", status=500, expect_errors=True)
    assert session_cookie(response) is None
    assert client.get("/read").text == "1"
    response = client.fresh().get("/boom", status=500, expect_errors=True)
    assert session_cookie(response) is None
    assert store.length() == 1


NO_REFRESH = {"SESSION_REFRESH_EACH_REQUEST": False}  # see test_flask_refresh_each_request_loads_...


def test_no_query_for_a_request_that_does_not_use_its_session(make_client, adapter, store):
    client = make_client(adapter, config=NO_REFRESH)
    client.get("/count")
    counter = Counter(store)
    for path in ("/plain", "/unused"):
        response = client.get(path)
        assert "Set-Cookie" not in response.headers
        assert "Vary" not in response.headers and "Cache-Control" not in response.headers
    other = client.fresh()
    other.get("/plain"), other.get("/unused")
    assert counter.statements == []


def test_an_empty_new_session_is_not_stored_and_sets_no_cookie(make_client, adapter, store):
    client = make_client(adapter)
    for path in ("/read", "/unused", "/plain"):
        assert "Set-Cookie" not in client.get(path).headers
    assert store.length() == 0


COOKIE_OPTIONS = dict(path="/app", domain="example.com", secure=True, httponly=False, samesite="Strict",
                      partitioned=True, priority="High", max_age=3600)


def check_cookie_options(header):
    assert attributes(header) == {
        "domain": "example.com", "path": "/app", "expires": attributes(header)["expires"], "secure": True,
        "partitioned": True, "priority": "High", "samesite": "Strict"}  # no HttpOnly
    assert 3590 < expires_in(header) <= 3600


def test_cookie_attributes_as_configured(make_client, adapter):
    client = make_client(adapter, **COOKIE_OPTIONS)
    check_cookie_options(session_cookie(client.get("/count", extra_environ=HTTPS)))
    over_http = session_cookie(client.fresh().get("/count"))
    if adapter == "flask":  # as Flask's own sessions: behind a TLS proxy without ProxyFix the app sees HTTP
        check_cookie_options(over_http)
    else:  # express-session's rule: a secure cookie is never sent over HTTP
        assert over_http is None


def test_defaults_are_httponly_with_path_slash(make_client, adapter):
    client = make_client(adapter, max_age=60)
    header = session_cookie(client.get("/count"))
    assert attributes(header)["path"] == "/" and attributes(header)["httponly"] is True
    assert "secure" not in attributes(header) and "domain" not in attributes(header)


@pytest.mark.parametrize("trust_proxy", [True, False])
def test_secure_auto_follows_the_request_scheme(make_client, adapter, trust_proxy):
    client = make_client(adapter, secure="auto", trust_proxy=trust_proxy)
    assert "secure" not in attributes(session_cookie(client.fresh().get("/count")))
    assert attributes(session_cookie(client.fresh().get("/count", extra_environ=HTTPS)))["secure"] is True
    behind_proxy = session_cookie(client.fresh().get("/count", headers={"X-Forwarded-Proto": "https"}))
    assert ("secure" in attributes(behind_proxy)) is trust_proxy


def test_remember_me_and_forget(make_client, adapter, store):
    client = make_client(adapter)
    client.get("/count")
    header = session_cookie(client.get("/remember"))
    assert THIRTY_DAYS - 10 < expires_in(header) <= THIRTY_DAYS
    assert store.get(client.sid)["cookie"]["originalMaxAge"] == THIRTY_DAYS * 1000
    assert THIRTY_DAYS - 10 < row_expires_in(store, client.sid) <= THIRTY_DAYS
    header = session_cookie(client.get("/forget"))
    assert header is not None and expires_in(header) is None  # a browser-session cookie
    assert store.get(client.sid)["cookie"]["originalMaxAge"] is None
    assert DAY - 10 < row_expires_in(store, client.sid) <= DAY  # the row lives a day after last use
    assert client.get("/read").text == "1"


def test_rolling_sends_the_cookie_on_every_response(make_client, adapter):
    client = make_client(adapter, rolling=True, max_age=3600)
    client.get("/count")
    for path in ("/read", "/unused"):
        header = session_cookie(client.get(path))
        assert header is not None and 3590 < expires_in(header) <= 3600
    still = make_client(adapter, rolling=False, max_age=3600)
    still.get("/count")
    assert session_cookie(still.get("/read")) is None


def test_resave_writes_an_unchanged_session(make_client, adapter, store):
    client = make_client(adapter, resave=True, rolling=False, max_age=3600, touch_after=3600)
    client.get("/count")
    counter = Counter(store)
    client.get("/read")
    assert writes(counter)
    lazy = make_client(adapter, resave=False, rolling=False, max_age=3600, touch_after=3600)
    lazy.get("/count")
    counter.reset()
    assert lazy.get("/read").text == "1"
    assert len(counter.statements) == 1 and not writes(counter)  # one SELECT


def test_save_uninitialized_stores_an_empty_session(make_client, adapter, store):
    client = make_client(adapter, save_uninitialized=True)
    assert session_cookie(client.get("/read")) is not None
    assert store.length() == 1 and list(store.get(client.sid)) == ["cookie"]


@pytest.mark.parametrize("touch_after", [0, 3600])
def test_touch_after(make_client, adapter, store, touch_after):
    client = make_client(adapter, max_age=7200, rolling=False, touch_after=touch_after)
    client.get("/count")
    first = row_expires_in(store, client.sid)
    counter = Counter(store)
    client.get("/read")
    assert bool(writes(counter)) is (touch_after == 0)  # an unchanged session is touched when due
    assert row_expires_in(store, client.sid) >= first - 2


def test_a_change_after_the_response_raises(make_client, adapter, store):
    client = make_client(adapter)
    assert client.get("/late").text == "started;RuntimeError"
    assert store.get(client.sid)["n"] == 1


def test_vary_cookie_and_cache_control_private_when_the_session_was_used(make_client, adapter):
    client = make_client(adapter, config=NO_REFRESH)
    for path in ("/count", "/read"):
        response = client.get(path)
        assert response.headers["Vary"] == "Cookie" and response.headers["Cache-Control"] == "private"
    response = client.get("/plain")
    assert "Vary" not in response.headers and "Cache-Control" not in response.headers


# -- Lifetime is a change like a key: two requests on threads, held at barriers -------------------


def race(client, b_then, a_request):
    """Request B (on a thread, with the client's cookie) loads the session and waits; a_request() runs to its
    end; then B does b_then(session) and ends. Returns B's response."""
    barrier = threading.Barrier(2, timeout=20)

    def request_b(session):
        session.get("n")  # loaded
        barrier.wait()  # 1: B has loaded
        barrier.wait()  # 2: A has ended
        b_then(session)
        return "b done"

    client.hooks["b"] = request_b
    answers = []
    cookie = client.app.cookies[COOKIE]
    b = threading.Thread(target=lambda: answers.append(client.fresh().raw("/hook?name=b", cookie)))
    b.start()
    try:
        barrier.wait()
        a_request()
        barrier.wait()
    finally:
        b.join(30)
    assert answers and answers[0].text == "b done"
    return answers[0]


@pytest.mark.parametrize("a_sets", [THIRTY_DAYS, 300], ids=["longer", "shorter"])
@pytest.mark.parametrize("b_does", ["sets-a-key", "touches"])
def test_a_lifetime_set_by_one_request_survives_another_that_loaded_before(make_client, adapter, store, a_sets,
                                                                            b_does):
    """B loads; A sets the lifetime and saves; B then saves another key (or only touches): A's lifetime stays."""
    options = {"rolling": True, "touch_after": 0} if b_does == "touches" else {"rolling": False}
    client = make_client(adapter, max_age=DAY, **options)
    client.get("/count")
    sid = client.sid

    def b_then(session):
        if b_does == "sets-a-key":
            session["b"] = 1

    def a_request():
        assert client.get("/lifetime?seconds=%d" % a_sets).text == "lifetime set"

    b_response = race(client, b_then, a_request)
    data, expiry = store.get_with_expiry(sid)
    assert data["cookie"]["originalMaxAge"] == a_sets * 1000
    assert a_sets - 15 < (expiry - datetime.datetime.now(UTC)).total_seconds() <= a_sets
    assert data["n"] == 1 and data.get("b") == (1 if b_does == "sets-a-key" else None)
    if b_does == "sets-a-key":  # nor does B's cookie, arriving last, give the browser its stale lifetime
        header = session_cookie(b_response)
        assert header is None or abs(expires_in(header) - a_sets) < 15, header


@pytest.mark.parametrize("b_does", ["sets-a-key", "touches"])
def test_a_log_out_is_not_undone_by_a_request_that_loaded_before(make_client, adapter, store, b_does):
    client = make_client(adapter, **({"rolling": True, "touch_after": 0} if b_does == "touches" else {}))
    client.get("/count")
    sid = client.sid

    def b_then(session):
        if b_does == "sets-a-key":
            session["b"] = 1

    b_response = race(client, b_then, lambda: client.get("/logout"))
    assert store.get(sid) is None and store.length() == 0  # neither brought back nor saved anew
    header = session_cookie(b_response)
    if b_does == "sets-a-key":
        assert header is None
    elif header is not None:
        # A rolling B can't tell that its touch found no row (store.touch reports nothing), so it may
        # send the logged-out id's cookie again, as express-session does; that id is worth nothing.
        assert client.raw("/count", cookie_value(header)).text == "1"
        assert client.sid != sid and store.get(sid) is None


# -- One adapter's own behaviour ---------------------------------------------------------------------


def test_wsgi_start_response_with_exc_info_saves_nothing(store):
    def app(environ, start_response):
        environ[ENVIRON_KEY]["n"] = 1
        try:
            raise ValueError("rendered as an error page")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page"]

    client = webtest.TestApp(SessionMiddleware(app, store, secret=SECRET))
    response = client.get("/", status=500)
    assert "Set-Cookie" not in response.headers and store.length() == 0


def test_wsgi_app_that_starts_its_response_while_iterated(store):
    """A generator app calls start_response only when the server iterates it: the session is saved then."""

    def app(environ, start_response):
        session = environ[ENVIRON_KEY]
        session["n"] = session.get("n", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield str(session["n"]).encode()

    client = webtest.TestApp(SessionMiddleware(app, store, secret=SECRET))
    assert [client.get("/").text for _ in range(3)] == ["1", "2", "3"]
    assert store.get(sid_of_value(client.cookies[COOKIE]))["n"] == 3


def test_flask_cookie_settings_from_config_and_options_over_config(make_client):
    config = {"SESSION_COOKIE_NAME": "flask_sid", "SESSION_COOKIE_PATH": "/app",
              "SESSION_COOKIE_DOMAIN": "example.com", "SESSION_COOKIE_SECURE": True,
              "SESSION_COOKIE_HTTPONLY": False, "SESSION_COOKIE_SAMESITE": "Strict",
              "SESSION_COOKIE_PARTITIONED": True}
    client = make_client("flask", config=config)
    header = session_cookie(client.get("/count", extra_environ=HTTPS), "flask_sid")
    assert attributes(header) == {"domain": "example.com", "path": "/app", "secure": True, "partitioned": True,
                                  "samesite": "Strict"}  # not permanent: no Expires; no HttpOnly
    client = make_client("flask", config=config, cookie_name="connect.sid", **COOKIE_OPTIONS)
    check_cookie_options(session_cookie(client.get("/count", extra_environ=HTTPS)))
    overridden = dict(COOKIE_OPTIONS, path="/other", samesite="Lax", httponly=True, secure=False,
                      partitioned=False)
    client = make_client("flask", config=config, cookie_name="connect.sid", **overridden)
    header = session_cookie(client.get("/count"))
    assert attributes(header)["path"] == "/other" and attributes(header)["samesite"] == "Lax"
    assert attributes(header)["httponly"] is True and "secure" not in attributes(header)


def test_flask_permanent_sessions_roll_with_refresh_each_request(make_client, store):
    client = make_client("flask")  # SESSION_REFRESH_EACH_REQUEST: Flask's default, True
    client.get("/count")
    assert session_cookie(client.get("/read")) is None  # a browser-session cookie does not roll
    client.get("/remember")
    header = session_cookie(client.get("/read"))
    assert header is not None and THIRTY_DAYS - 10 < expires_in(header) <= THIRTY_DAYS
    client = make_client("flask", config=NO_REFRESH)
    client.get("/count"), client.get("/remember")
    assert session_cookie(client.get("/read")) is None


def test_flask_refresh_each_request_loads_a_session_that_brings_a_cookie(make_client, store):
    """With SESSION_REFRESH_EACH_REQUEST, a route that never used a cookied session still loads it, once."""
    client = make_client("flask")
    client.get("/count")
    counter = Counter(store)
    response = client.get("/plain")
    assert len(counter.statements) == 1 and not writes(counter)  # one SELECT: is it permanent?
    assert "Set-Cookie" not in response.headers  # it is not: nothing to renew
    counter.reset()
    client.fresh().get("/plain")  # no cookie: nothing to load
    assert counter.statements == []


# -- The WSGI middleware under another framework: Falcon -----------------------------------------


class FalconCounter:
    def on_get(self, req, resp):
        session = req.env[ENVIRON_KEY]
        session["n"] = session.get("n", 0) + 1
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = str(session["n"])


class FalconLogout:
    def on_get(self, req, resp):
        req.env[ENVIRON_KEY].destroy()
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "bye"


def falcon_client(store, **options):
    app = falcon.App()
    app.add_route("/count", FalconCounter())
    app.add_route("/logout", FalconLogout())
    return webtest.TestApp(SessionMiddleware(app, store, secret=SECRET, **options))


def test_falcon_counter_and_log_out(store):
    client = falcon_client(store)
    assert [client.get("/count").text for _ in range(3)] == ["1", "2", "3"]
    sid = sid_of_value(client.cookies[COOKIE])
    assert store.get(sid)["n"] == 3
    response = client.get("/logout")
    assert cookie_value(session_cookie(response)) == "" and store.get(sid) is None
    assert client.get("/count").text == "1"


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def down_store(table_name):
    """A store whose PostgreSQL server is down (nothing listens on its port)."""
    db = peewee.PostgresqlDatabase("test", host="127.0.0.1", port=closed_port(), user="postgres",
                                   connect_timeout=2)
    store = PeeweeSessionStore(db, table_name=table_name, clear_interval=0)
    yield store
    store.close()


A_COOKIE = {"Cookie": "%s=%s" % (COOKIE, urllib.parse.quote(sign_session_id("a" * 32, SECRET), safe=""))}


@pytest.mark.parametrize("with_cookie", [True, False], ids=["loading", "saving"])
def test_falcon_store_down_answers_error_status(down_store, with_cookie):
    """Falcon makes its own 500 page of any exception: the middleware still answers error_status."""
    client = falcon_client(down_store, error_status=503)
    response = client.get("/count", headers=A_COOKIE if with_cookie else {}, status="*", expect_errors=True)
    assert response.status_int == 503 and response.headers["Retry-After"] == "5"
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("with_cookie", [True, False], ids=["loading", "saving"])
def test_store_down_answers_error_status(adapter, down_store, with_cookie):
    client = build_client(adapter, down_store, config=NO_REFRESH, error_status=503)
    response = client.get("/count", headers=A_COOKIE if with_cookie else {}, status="*", expect_errors=True)
    assert response.status_int == 503 and response.headers["Retry-After"] == "5"
    assert "Set-Cookie" not in response.headers
    # A route that doesn't use the session still works (in Flask, with SESSION_REFRESH_EACH_REQUEST, a
    # request with a cookie loads its session at the end: it too is answered with error_status).
    response = client.get("/plain", headers=A_COOKIE)
    assert response.text == "no session here"


# -- What a cold review found ----------------------------------------------------------------------


def test_a_cookie_attribute_set_by_a_request_is_saved_sent_and_kept(make_client, adapter, store):
    """As express-session keeps a session's cookie settings: a request may change them for its session."""
    client = make_client(adapter)
    client.get("/count")

    def narrow(session):
        session.cookie.path = "/app"
        session.cookie.samesite = "Strict"
        return "narrowed"

    client.hooks["narrow"] = narrow
    header = session_cookie(client.get("/hook?name=narrow"))
    assert header is not None and attributes(header)["path"] == "/app" and attributes(header)["samesite"] == "Strict"
    stored = store.get(client.sid)["cookie"]
    assert stored["path"] == "/app" and stored["sameSite"] == "strict"
    client.hooks["look"] = lambda session: "%s %s" % (session.cookie.path, session.cookie.samesite)
    assert client.get("/hook?name=look").text == "/app Strict"  # restored from the stored session


def test_a_cookie_attribute_set_at_run_time_is_checked(make_client, adapter, store):
    client = make_client(adapter)

    def inject(session):
        for name, value in (("path", "/a; Domain=evil.example"), ("domain", "evil.example; Secure"),
                            ("samesite", "None; Priority=High"), ("priority", "urgent"), ("httponly", "yes")):
            try:
                setattr(session.cookie, name, value)
            except ValueError:
                continue
            return "accepted %s" % name
        return "all refused"

    client.hooks["inject"] = inject
    assert client.get("/hook?name=inject").text == "all refused"


def test_bad_input_is_never_answered_as_unavailable(make_client, adapter, store):
    """With error_status, a value that can't be stored is the app's error (a 500), never "retry later"."""
    client = make_client(adapter, error_status=503)
    client.get("/count")

    def unstorable(session):
        session["when"] = datetime.datetime.now()
        return "set"

    client.hooks["unstorable"] = unstorable
    assert client.get("/hook?name=unstorable", status=500, expect_errors=True).status_int == 500
    assert store.get(client.sid)["n"] == 1


def test_flask_takes_a_bytes_secret_key_that_is_not_utf8(store):
    client = build_client("flask", store)
    client.wsgi.secret_key = b"\xff\xfe" + bytes(range(30))  # os.urandom(32), say
    assert client.get("/count").text == "1" and client.get("/count").text == "2"


def test_flask_saves_a_request_served_inside_an_except_block(store):
    """Only an exception of the request's own stops the save, not one the server happens to be handling."""
    client = build_client("flask", store)
    try:
        raise KeyError("the server's own, being handled")
    except KeyError:
        assert client.get("/count").text == "1" and client.get("/count").text == "2"
    assert store.get(client.sid)["n"] == 2
