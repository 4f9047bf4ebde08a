"""Concurrent requests of one session, on every database: nothing lost, nothing resurrected.

Each test holds its requests at a barrier after they have loaded the session, so that every
request works from the same stored state: a save that rewrote the whole document would lose
the others' changes, and a save that upserted would bring a destroyed session back.
"""

import threading

import pytest
import webtest

from conftest import build_app

THREADS = 6
TIMEOUT = 20


def run_concurrently(app, paths, cookie):
    """Send each path in its own thread with the same session cookie; returns the status codes."""
    statuses, errors = [None] * len(paths), []

    def send(index, path):
        try:
            response = webtest.TestApp(app).get(path, headers={"Cookie": cookie}, expect_errors=True)
            statuses[index] = response.status_int
        except Exception as exc:  # reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i, path)) for i, path in enumerate(paths)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not errors, errors
    return statuses


@pytest.fixture
def session_app(store):
    """(app, store, cookie header, sid) with a stored session {"n": 1}."""
    app, plugin = build_app(store)
    client = webtest.TestApp(app)
    client.get("/count")
    cookie = "connect.sid=" + client.cookies["connect.sid"]
    sid = [sid for sid in store.all()][0]
    return app, store, cookie, sid


def test_concurrent_requests_setting_different_keys_keep_every_key(session_app):
    app, store, cookie, sid = session_app
    loaded = threading.Barrier(THREADS, timeout=TIMEOUT)

    @app.get("/put/<key>")
    def put(key, session):
        session.get("n")  # load
        loaded.wait()     # everyone has read the same state
        session[key] = {"by": key}
        if key == "k0":
            del session["n"]  # a deletion is merged too

    assert run_concurrently(app, ["/put/k%d" % i for i in range(THREADS)], cookie) == [200] * THREADS
    stored = store.get(sid)
    assert {key: stored[key] for key in stored if key != "cookie"} == {"k%d" % i: {"by": "k%d" % i}
                                                                      for i in range(THREADS)}


def test_a_log_out_is_never_undone_by_requests_still_running(session_app):
    app, store, cookie, sid = session_app
    loaded = threading.Barrier(THREADS, timeout=TIMEOUT)
    logged_out = threading.Event()

    @app.get("/write/<key>")
    def write(key, session):
        session.get("n")
        loaded.wait()
        logged_out.wait(TIMEOUT)  # save only after the log-out
        session[key] = "late"

    @app.get("/logout")
    def logout(session):
        session.get("n")
        loaded.wait()
        session.destroy()
        logged_out.set()

    paths = ["/logout"] + ["/write/k%d" % i for i in range(THREADS - 1)]
    assert run_concurrently(app, paths, cookie) == [200] * THREADS
    assert store.get(sid) is None
    assert store.length() == 0  # and no writer started a session of its own


def test_a_regenerated_id_never_comes_back(session_app):
    app, store, cookie, sid = session_app
    loaded = threading.Barrier(THREADS, timeout=TIMEOUT)
    logged_in = threading.Event()

    @app.get("/write/<key>")
    def write(key, session):
        session.get("n")
        loaded.wait()
        logged_in.wait(TIMEOUT)
        session[key] = "late"

    @app.get("/login")
    def login(session):
        session.get("n")
        loaded.wait()
        session.regenerate()
        session["user"] = "ann"
        session.save()
        logged_in.set()

    paths = ["/login"] + ["/write/k%d" % i for i in range(THREADS - 1)]
    assert run_concurrently(app, paths, cookie) == [200] * THREADS
    assert store.get(sid) is None
    [(new_sid, new)] = store.all().items()
    assert new_sid != sid and new["user"] == "ann" and new["n"] == 1


@pytest.mark.parametrize("ended_by", ["destroy", "regenerate"])
def test_a_session_ended_elsewhere_stays_ended_however_often_this_request_saves(session_app, ended_by):
    """A log-out (or log-in) in another request between two saves of this one: neither save brings the id back."""
    app, store, cookie, sid = session_app
    loaded = threading.Barrier(2, timeout=TIMEOUT)
    ended = threading.Event()

    @app.get("/work")
    def work(session):
        session["user"] = "alice"
        loaded.wait()
        ended.wait(TIMEOUT)
        session["cart"] = [1, 2]
        session.save()  # finds the row gone; the save after the callback must not insert it again
        return "ok"

    @app.get("/end")
    def end(session):
        session.get("n")
        loaded.wait()
        getattr(session, ended_by)()
        ended.set()

    assert run_concurrently(app, ["/work", "/end"], cookie) == [200, 200]
    assert store.get(sid) is None
    assert all(sess.get("user") != "alice" for sess in store.all().values())


def test_locked_read_modify_write_loses_no_increment(session_app):
    app, store, cookie, sid = session_app
    increments = 5

    @app.get("/deposit")
    def deposit(session):
        for _ in range(increments):
            with session.locked():
                session["n"] = session["n"] + 1

    assert run_concurrently(app, ["/deposit"] * THREADS, cookie) == [200] * THREADS
    assert store.get(sid)["n"] == 1 + THREADS * increments


def test_the_same_key_last_writer_wins(session_app):
    app, store, cookie, sid = session_app
    loaded = threading.Barrier(2, timeout=TIMEOUT)
    first_saved = threading.Event()

    @app.get("/set/<value>")
    def set_value(value, session):
        session.get("n")
        loaded.wait()
        if value == "second":
            first_saved.wait(TIMEOUT)
        session["color"] = value
        session.save()
        first_saved.set()

    assert run_concurrently(app, ["/set/first", "/set/second"], cookie) == [200, 200]
    assert store.get(sid)["color"] == "second"
