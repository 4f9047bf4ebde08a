"""The session cookie: express-session's format, the attributes as configured, and hostile cookies."""

import datetime
import email.utils
import secrets
import urllib.parse

import pytest
import webtest

from conftest import SECRET
from peewee_sessions import SessionPlugin, _http_date, sign_session_id


def set_cookie(response):
    return response.headers["Set-Cookie"]


def attributes(header):
    parts = [p.strip() for p in header.split(";")]
    return parts[0], {p.split("=")[0].lower(): (p.split("=", 1)[1] if "=" in p else True) for p in parts[1:]}


def test_value_is_express_sessions_signed_id_url_encoded(web):
    client, _, store = web
    pair, _ = attributes(set_cookie(client.get("/count")))
    name, value = pair.split("=", 1)
    assert name == "connect.sid" and value.startswith("s%3A")
    signed = urllib.parse.unquote(value)
    sid = signed[2:signed.rindex(".")]
    assert signed == sign_session_id(sid, SECRET)
    assert len(sid) >= 22 and store.get(sid)["n"] == 1  # >= 128 random bits


def test_default_attributes(web):
    client, _, _ = web
    before = datetime.datetime.now(datetime.timezone.utc)
    response = client.get("/count")
    _, attrs = attributes(set_cookie(response))
    assert attrs["path"] == "/" and attrs["httponly"] is True and attrs["samesite"] == "Lax"
    assert "secure" not in attrs and "domain" not in attrs and "max-age" not in attrs
    expires = email.utils.parsedate_to_datetime(attrs["expires"])
    assert abs((expires - before).total_seconds() - 86400) < 5
    assert response.headers["Vary"] == "Cookie" and response.headers["Cache-Control"] == "private"


def test_expires_is_the_stored_expiry_written_as_javascript_writes_dates(web):
    client, _, store = web
    pair, attrs = attributes(set_cookie(client.get("/count")))
    signed = urllib.parse.unquote(pair.split("=", 1)[1])
    stored = store.get(signed[2:signed.rindex(".")])["cookie"]["expires"]  # e.g. "2026-11-28T09:05:00.123Z"
    expected = email.utils.format_datetime(datetime.datetime.fromisoformat(stored.replace("Z", "+00:00")), usegmt=True)
    assert attrs["expires"] == expected  # e.g. "Sat, 28 Nov 2026 09:05:00 GMT", Date#toUTCString's format


@pytest.mark.parametrize("when", [
    datetime.datetime(2026, 3, 1, 9, 5, 7, 999999, tzinfo=datetime.timezone.utc),  # a single-digit day
    datetime.datetime(999, 12, 31, 23, 59, 59),  # naive (taken as UTC), a three-digit year
    datetime.datetime(2026, 11, 27, 1, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=5))),  # not UTC
])
def test_http_dates_are_written_as_javascript_writes_them(when):
    utc = when.replace(tzinfo=datetime.timezone.utc) if when.tzinfo is None else when
    assert _http_date(when) == email.utils.format_datetime(utc.astimezone(datetime.timezone.utc), usegmt=True)


def test_configured_attributes(make_web):
    client, _, _ = make_web(path="/app", domain="example.test", secure=True, httponly=False, samesite="None",
                            partitioned=True, priority="high", max_age=60, cookie_name="sid")
    client.extra_environ["wsgi.url_scheme"] = "https"
    response = client.get("/count")
    pair, attrs = attributes(set_cookie(response))
    assert pair.startswith("sid=s%3A")
    assert attrs["path"] == "/app" and attrs["domain"] == "example.test"
    assert attrs["secure"] is True and attrs["partitioned"] is True
    assert attrs["priority"] == "High" and attrs["samesite"] == "None" and "httponly" not in attrs
    assert list(attrs) == ["domain", "path", "expires", "secure", "partitioned", "priority", "samesite"]


def test_browser_session_cookie_has_no_expires(make_web):
    client, plugin, _ = make_web(max_age=None, samesite=None)
    _, attrs = attributes(set_cookie(client.get("/count")))
    assert "expires" not in attrs and "samesite" not in attrs
    stored = list(plugin.store.all().values())[0]
    assert stored["cookie"]["originalMaxAge"] is None and stored["cookie"]["expires"] is None


def test_secure_cookies_are_not_sent_over_plain_http(make_web):
    client, plugin, _ = make_web(secure=True)
    response = client.get("/count")
    assert "Set-Cookie" not in response.headers
    assert plugin.store.length() == 1  # saved all the same, as express-session does


@pytest.mark.parametrize("scheme, forwarded, trust, secure", [
    ("http", None, False, False),
    ("https", None, False, True),
    ("http", "https", False, False),  # the header is ignored unless the proxy is trusted
    ("http", "https", True, True),
    ("https", "http", True, False),
])
def test_secure_auto(make_web, scheme, forwarded, trust, secure):
    client, _, _ = make_web(secure="auto", trust_proxy=trust)
    client.extra_environ["wsgi.url_scheme"] = scheme
    headers = {"X-Forwarded-Proto": forwarded} if forwarded else {}
    _, attrs = attributes(set_cookie(client.get("/count", headers=headers)))
    assert ("secure" in attrs) is secure


@pytest.mark.parametrize("options", [
    dict(samesite="Sideways"), dict(priority="urgent"), dict(secure="yes"), dict(samesite="None"),
    dict(partitioned=True), dict(max_age=0), dict(max_age=float("nan")), dict(max_age=1e12), dict(max_age="60"),
    dict(cookie_name="bad name"), dict(keyword="not-an-identifier"),
    dict(path="/; Domain=evil.example; SameSite=None"), dict(path="/\r\nX-Injected: 1"), dict(path=None),
    dict(domain="evil.example; SameSite=None"), dict(domain="a b.example"), dict(domain=""),
    dict(secret=""), dict(secret=["new", ""]), dict(secret=b"bytes"), dict(secret="\udcff\udcfe from os.environ"),
])
def test_bad_cookie_options_are_refused(store, options):
    with pytest.raises(ValueError):
        SessionPlugin(store, **{"secret": "x", **options})


@pytest.mark.parametrize("options", [dict(domain="localhost"), dict(domain=".example.com"), dict(path="/app"),
                                     dict(max_age=36500 * 86400), dict(max_age=0.5)])
def test_good_cookie_options_are_taken(store, options):
    SessionPlugin(store, secret="x", **options)


def test_a_session_id_of_255_non_ascii_characters_is_found_again(make_web):
    client, _, _ = make_web(genid=lambda: "\u00e9" * 244 + secrets.token_hex(5) + "!")
    assert [client.get("/count").text for _ in range(3)] == ["1", "2", "3"]


def test_a_lifetime_set_out_of_range_in_a_callback_is_refused_there(make_web):
    client, _, app = make_web()
    app.catchall = False  # the error itself, not Bottle's 500 page

    @app.get("/forever")
    def forever(session):
        session.cookie.max_age = 1e300

    with pytest.raises(ValueError, match="max_age"):
        client.get("/forever")


def test_existing_vary_and_cache_control_are_respected(make_web):
    client, _, app = make_web()

    @app.get("/cached")
    def cached(session):
        import bottle
        bottle.response.set_header("Vary", "Accept-Encoding")
        bottle.response.set_header("Cache-Control", "no-store")
        session["x"] = 1

    response = client.get("/cached")
    assert response.headers["Vary"] == "Accept-Encoding, Cookie"
    assert response.headers["Cache-Control"] == "no-store"


def signed(sid, secret=SECRET):
    return urllib.parse.quote(sign_session_id(sid, secret), safe="")


def hostile_cookies(store):
    store.set("victim", {"cookie": {"originalMaxAge": 60000}, "n": 41})
    store.set("expired-one", {"cookie": {"expires": "2001-01-01T00:00:00.000Z"}, "n": 41})
    return [
        "connect.sid=" + signed("victim", "wrong secret"),        # forged signature
        "connect.sid=" + signed("victim")[:-3],                   # tampered signature
        "connect.sid=s%3Avictim",                                  # unsigned
        "connect.sid=victim",                                      # a bare id
        "connect.sid=" + signed("expired-one"),                    # valid signature, expired id
        "connect.sid=" + signed("unknown-id"),                     # valid signature, unknown id
        "connect.sid=" + signed("x' OR '1'='1"),                   # SQL metacharacters, validly signed
        "connect.sid=" + "A" * 100000,                             # oversized
        "connect.sid=%ZZ%00garbage\u00e9",                         # garbage
        "connect.sid=" + signed("a" * 300),                        # validly signed but too long to be an id
        'connect.sid="unterminated',
        "; ;; =;connect.sid=;",
    ]


def test_hostile_cookies_get_a_new_session_never_an_error(web):
    client, plugin, store = web
    for cookie in hostile_cookies(store):
        fresh = webtest.TestApp(client.app)
        response = fresh.get("/count", headers={"Cookie": cookie})
        assert response.status_int == 200 and response.text == "1", cookie
        new_sid = urllib.parse.unquote(attributes(set_cookie(response))[0].split("=", 1)[1])[2:].rsplit(".", 1)[0]
        assert new_sid not in ("victim", "expired-one", "unknown-id", "x' OR '1'='1"), cookie
    assert store.get("victim")["n"] == 41


def test_a_response_that_read_the_session_is_private_even_without_a_cookie(web):
    client, _, _ = web
    client.get("/count")
    response = client.get("/read")
    assert "Set-Cookie" not in response.headers
    assert response.headers["Vary"] == "Cookie" and response.headers["Cache-Control"] == "private"
    assert "Vary" not in client.get("/plain").headers


def test_a_copy_of_the_cookie_settings_keeps_every_attribute():
    from peewee_sessions import SessionCookie

    settings = SessionCookie(60, path="/app", domain="example.com", secure=False, httponly=False,
                             samesite="Strict", partitioned=True, priority="High")
    copy = settings.copy(120, True)
    for slot in SessionCookie.__slots__:  # a slot added later and not copied fails here
        if slot not in ("_max_age", "_expires", "_secure"):
            assert getattr(copy, slot) == getattr(settings, slot), slot
    assert (copy.max_age, copy.secure) == (120, True)
    assert 119 < (copy.expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds() <= 120
