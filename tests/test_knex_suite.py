"""connect-session-knex's own test suite (test/index.test.js), translated to Python, on every backend."""

import threading

SESS = {"cookie": {"maxAge": 2000}, "name": "sample name"}


def test_initial_clear(store):
    store.clear()
    assert store.length() == 0


def test_set_then_clear(store):
    store.set("1092348234", SESS)
    assert store.clear() == 1


def test_double_clear(store):
    store.clear()
    assert store.clear() == 0


def test_destroy(store):
    store.set("555666777", SESS)
    store.destroy("555666777")
    assert store.length() == 0


def test_set(store):
    store.set("1111222233334444", SESS)
    assert store.length() == 1


def test_retrieve(store):
    store.set("1111222233334444", SESS)
    assert store.get("1111222233334444") == SESS


def test_unknown_session(store):
    assert store.get("hope-and-change") is None


def test_only_one_session_should_exist(store):
    store.set("1111222233334444", SESS)
    store.set("1111222233334444", SESS)
    assert store.length() == 1


def test_touch(store):
    store.clear()
    store.set("11112222333344445555", SESS)
    store.touch("11112222333344445555", SESS)
    assert store.get("11112222333344445555") == SESS


def test_retrieve_all(store):
    store.clear()
    sids = ["1", "2", "3"]
    for sid in sids:
        store.set(sid, SESS)
    assert store.all() == {sid: SESS for sid in sids}


def test_no_cleanup_timer_when_interval_is_zero(make_store):
    before = {t.name for t in threading.enumerate()}
    store = make_store(clear_interval=0)
    store.set("a", SESS)
    assert store._sweeper.timer is None
    assert {t.name for t in threading.enumerate()} - before == set()
