"""Queries and connections per request: none for a route that doesn't use its session, and no leaks."""

import bottle

from conftest import Counter


def statements(counter):
    return [sql.split()[0] for sql in counter.statements]


def test_no_query_and_no_connection_for_routes_that_do_not_use_the_session(web):
    client, plugin, store = web
    client.get("/count")
    store.db.close()
    counter = Counter(store)
    for path in ("/unused", "/plain"):
        response = client.get(path)
        assert "Set-Cookie" not in response.headers
    assert len(counter) == 0
    assert store.db.is_closed()


def test_queries_per_request(web):
    client, plugin, store = web
    counter = Counter(store)
    client.get("/count")  # new session: nothing to read, one write
    assert statements(counter) == ["INSERT"]
    counter.reset()
    client.get("/read")   # read-only: one read (touch not yet due)
    assert statements(counter) == ["SELECT"]
    counter.reset()
    client.get("/count")  # change: read + one write, the row replaced if nobody wrote it meanwhile
    assert statements(counter) == ["SELECT", "UPDATE"]


def test_the_plugin_closes_only_the_connection_it_opened(web):
    client, plugin, store = web
    store.db.close()
    client.get("/count")
    client.get("/count")
    assert store.db.is_closed()
    store.db.connect()  # an app that manages its own connection keeps it
    client.get("/count")
    assert not store.db.is_closed()


def test_the_connection_is_closed_after_errors_too(make_web):
    client, plugin, app = make_web()

    @app.get("/boom")
    def boom(session):
        session["n"] = 1
        raise RuntimeError("boom")

    @app.get("/bye")
    def bye(session):
        session["n"] = 1
        bottle.redirect("/")

    plugin.store.db.close()
    client.get("/boom", expect_errors=True)
    client.get("/bye")
    assert plugin.store.db.is_closed()


def test_requests_reuse_the_threads_own_connection(web):
    """The store's statements go on a connection of its own per thread, opened once and kept."""
    client, plugin, store = web
    client.get("/count")
    store.db.close()
    own = store._own_db or store.db  # SQLite in rollback-journal mode has none (test_own_connection.py)
    original, opened = own.connect, []
    own.connect = lambda *args, **kwargs: opened.append(original(*args, **kwargs)) or opened[-1]
    for _ in range(3):
        client.get("/count")  # a read and a write each
    assert opened.count(True) == 0
    assert store.db.is_closed()
