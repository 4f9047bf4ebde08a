"""express-session's cookie signature and cookie parsing, against its published test vector."""

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peewee_sessions import _encode_cookie_value, _read_cookie, sign_session_id, unsign_session_id

VECTOR_SID = "QvdDmbgAlZ1a2pGWkq6xSUrkC9OZc_GH"
VECTOR_SIGNED = "s:QvdDmbgAlZ1a2pGWkq6xSUrkC9OZc_GH.zbOdGS0Avm/sNTlysNkDBAuuqED2vp50R7FUM2q4y8M"


def test_sign_matches_express_session():
    assert sign_session_id(VECTOR_SID, "keyboard cat") == VECTOR_SIGNED


def test_unsign_accepts_any_of_the_secrets():
    assert unsign_session_id(VECTOR_SIGNED, ["keyboard cat"]) == VECTOR_SID
    assert unsign_session_id(VECTOR_SIGNED, ["new secret", "keyboard cat"]) == VECTOR_SID


@pytest.mark.parametrize("value", [
    VECTOR_SIGNED[:-1],                                  # signature cut short
    VECTOR_SIGNED + "A",                                 # signature extended
    VECTOR_SIGNED.replace("Qvd", "Xvd", 1),              # id changed under the signature
    VECTOR_SIGNED[2:],                                   # no "s:" prefix
    "s:" + VECTOR_SID,                                   # no signature at all
    "s:.", "s:", "", ".", "s:abc.", "s:.abc",
    "s:é.ü", "s:\ud800.x", "s:\x00.\x00",                # non-ASCII and odd characters never raise
])
def test_unsign_refuses_anything_else(value):
    assert unsign_session_id(value, ["keyboard cat"]) is None


def test_unsign_refuses_another_secret():
    assert unsign_session_id(VECTOR_SIGNED, ["not the cat"]) is None


def test_one_secret_may_be_given_as_a_string():
    assert unsign_session_id(VECTOR_SIGNED, "keyboard cat") == VECTOR_SID
    for letter in set("keyboard cat"):  # not one secret per character
        assert unsign_session_id(sign_session_id(VECTOR_SID, letter), "keyboard cat") is None


def test_an_empty_secret_signs_nothing():
    with pytest.raises(ValueError):
        sign_session_id(VECTOR_SID, "")
    with pytest.raises(ValueError):
        unsign_session_id(VECTOR_SIGNED, [""])


@pytest.mark.parametrize("header, expected", [
    ("connect.sid=s%3Aabc.def", "s:abc.def"),
    ("a=1; connect.sid=s%3Aabc.def; b=2", "s:abc.def"),
    ('connect.sid="s%3Aabc.def"', "s:abc.def"),           # quoted, as some clients send it
    ("connect.sid=first; connect.sid=second", "first"),   # the first wins, as Node's `cookie` parser
    ("xconnect.sid=nope", None),
    ("connect.sid", None),
    ("", None),
    ("connect.sid=%E0%A4%A", "%E0%A4%A"),                 # bad escapes are kept as they are
    ("connect.sid=" + "x" * 5000, None),                  # oversized: ignored
    pytest.param("connect.sid=" + "%C3%A9" * 255, "\u00e9" * 255, id="255-non-ascii"),  # not oversized
    ("connect.sid\x0b=first; connect.sid=second", "second"),  # Node trims only spaces and tabs
    ("connect.sid=\xa0first\x1c", "\xa0first\x1c"),
    (" \tconnect.sid \t= \tfirst\t ", "first"),
])
def test_read_cookie(header, expected):
    assert _read_cookie(header, "connect.sid") == expected


def test_cookie_value_is_url_encoded_as_express_session_writes_it():
    assert _encode_cookie_value(VECTOR_SIGNED) == (
        "s%3AQvdDmbgAlZ1a2pGWkq6xSUrkC9OZc_GH.zbOdGS0Avm%2FsNTlysNkDBAuuqED2vp50R7FUM2q4y8M")


@given(st.text())
def test_cookie_value_encoding_is_encode_uri_component(value):
    # JavaScript's encodeURIComponent leaves exactly these unescaped: A-Z a-z 0-9 - _ . ! ~ * ' ( )
    encoded = _encode_cookie_value(value)
    assert encoded == urllib.parse.quote(value, safe="-_.!~*'()")
    assert _read_cookie("connect.sid=" + encoded, "connect.sid") == (value if len(encoded) <= 4096 else None)
