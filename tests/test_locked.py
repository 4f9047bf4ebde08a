"""session.locked(): a read-modify-write under the row's lock, undone whole when its block fails.

A block that raises leaves the row and the session in memory as they were read under the lock, so
neither the commit nor the save after the callback makes its changes after all, and its error
reaches the app as raised; abort() is such a failure, and a redirect() is not: its block is saved.
(That locked() loses no concurrent increment is tests/test_concurrency.py's.)
"""

import bottle
import peewee
import pytest
import webtest

from conftest import build_app

LIVE = {"cookie": {"expires": "2099-01-01T00:00:00.000Z"}}


@pytest.fixture
def site(make_store):
    """(client, app, store, sid): a client whose stored session is {"n": 1}; over 1,000 bytes is refused."""
    store = make_store(max_session_size=1000)
    app, _ = build_app(store)
    client = webtest.TestApp(app)
    client.get("/count")
    [sid] = store.all()
    return client, app, store, sid


def test_an_error_of_the_apps_own_reaches_it_and_the_block_changes_nothing(site):
    client, app, store, sid = site
    store.set("other", LIVE)

    @app.get("/transfer")
    def transfer(session):
        try:
            with session.locked():
                session["n"] += 100
                session.regenerate()
                store.db.execute_sql("INSERT INTO %s (sid, sess, expired) VALUES ('other', '{}', '2099-01-01 00:00:00')"
                                     % store.table_name)  # the app's own statement, a duplicate key
        except peewee.IntegrityError:  # as raised: not turned into SessionStoreError
            return "refused at %d as %s" % (session["n"], session.id)

    response = client.get("/transfer")
    assert response.text == "refused at 1 as " + sid
    assert "Set-Cookie" not in response.headers  # nothing changed, not even the id
    assert sorted(store.all()) == sorted([sid, "other"]) and store.get(sid)["n"] == 1


def test_a_block_whose_own_save_fails_is_undone_in_the_session_too(site):
    client, app, store, sid = site

    @app.get("/grow")
    def grow(session):
        try:
            with session.locked():
                session["n"] += 100
                session["blob"] = "x" * 2000  # over max_session_size: the save under the lock raises
        except ValueError:
            return "refused at %d" % session["n"]

    assert client.get("/grow").text == "refused at 1"
    assert store.get(sid)["n"] == 1 and "blob" not in store.get(sid)


def test_a_log_out_in_a_failing_block_is_undone_and_sends_no_cookie(site):
    client, app, store, sid = site

    @app.get("/out")
    def out(session):
        try:
            with session.locked():
                session.destroy()
                raise RuntimeError("the payment failed")
        except RuntimeError:
            return session.id

    response = client.get("/out")
    assert response.text == sid and "Set-Cookie" not in response.headers
    assert store.get(sid)["n"] == 1


def test_a_new_sessions_failing_block_is_undone_too(make_web):
    client, plugin, app = make_web()

    @app.get("/try")
    def attempt(session):
        try:
            with session.locked():
                session["credits"] = 100
                session.save()  # inserted inside the block's transaction: rolled back with it
                raise RuntimeError("the card was declined")
        except RuntimeError:
            return "%d keys" % len(session)

    response = client.get("/try")
    assert response.text == "0 keys" and "Set-Cookie" not in response.headers
    assert plugin.store.all() == {}


def test_a_block_that_ends_in_redirect_is_saved(site):
    client, app, store, sid = site

    @app.get("/buy")
    def buy(session):
        with session.locked():
            session["n"] -= 1
            session["bought"] = True
            bottle.redirect("/done")

    assert client.get("/buy").status_int in (302, 303)  # 303 on HTTP/1.1
    assert store.get(sid)["n"] == 0 and store.get(sid)["bought"] is True


def test_a_block_that_ends_in_abort_is_undone_like_any_failure(site):
    client, app, store, sid = site
    store.set("other", LIVE)

    @app.get("/buy")
    def buy(session):
        with session.locked():
            session["n"] -= 1
            try:  # on PostgreSQL the failed statement also aborts the transaction: no save could follow it
                store.db.execute_sql("INSERT INTO %s (sid, sess, expired) VALUES ('other', '{}', '2099-01-01 00:00:00')"
                                     % store.table_name)
            except peewee.IntegrityError:
                bottle.abort(409, "sold out")

    assert client.get("/buy", expect_errors=True).status_int == 409
    assert store.get(sid)["n"] == 1


def test_a_block_inside_another_keeps_the_outer_blocks_changes(site):
    client, app, store, sid = site

    @app.get("/nested")
    def nested(session):
        with session.locked():
            session["outer"] = 1
            with session.locked():  # a helper that locks too: the lock is held, nothing to reload
                session["inner"] = 2
            try:
                with session.locked():
                    session["failed"] = 3
                    raise RuntimeError("undone alone")
            except RuntimeError:
                pass
        return "ok"

    client.get("/nested")
    stored = store.get(sid)
    assert (stored["n"], stored["outer"], stored["inner"], "failed" in stored) == (1, 1, 2, False)


def test_a_log_out_inside_a_block_stores_nothing_and_clears_the_cookie(site):
    client, app, store, sid = site

    @app.get("/logout")
    def logout(session):
        with session.locked():
            session.destroy()
        return "bye"

    cleared = client.get("/logout").headers["Set-Cookie"]
    assert cleared.startswith("connect.sid=;") and "1970" in cleared
    assert store.all() == {}


def test_a_block_that_finds_its_session_gone_stores_no_empty_one(site):
    client, app, store, sid = site

    @app.get("/look")
    def look(session):
        session.get("n")
        store.destroy(sid)  # a log-out by another request, meanwhile
        with session.locked():
            return "%d keys" % len(session)

    response = client.get("/look")
    assert response.text == "0 keys" and "Set-Cookie" not in response.headers
    assert store.all() == {}


@pytest.mark.parametrize("backend", ["postgresql"])  # of the three, the one whose constraints can wait for COMMIT
def test_the_apps_constraint_failing_at_commit_is_the_apps_error_and_undoes_the_block(site, backend):
    client, app, store, sid = site
    orders = store.table_name + "_orders"
    with store.db.connection_context():
        store.db.execute_sql("CREATE TABLE %s (sid varchar(255) REFERENCES %s (sid) DEFERRABLE INITIALLY DEFERRED)"
                             % (orders, store.table_name))
    try:
        @app.get("/order")
        def order(session):
            try:
                with session.locked():
                    session["n"] += 100
                    store.db.execute_sql("INSERT INTO %s (sid) VALUES ('no such session')" % orders)
            except peewee.IntegrityError:
                return "refused at %d" % session["n"]

        assert client.get("/order").text == "refused at 1"
        assert store.get(sid)["n"] == 1
    finally:
        with store.db.connection_context():
            store.db.execute_sql("DROP TABLE %s" % orders)
