"""The example site (example_bottle.py) in a real browser: headless Chromium driven by Selenium.

Needs Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`) and
selenium (`pip install selenium`). Without them the test is skipped, or fails when CI=true.
Selenium is given both paths, so it never tries to download a browser or a driver.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import IN_CI

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    webdriver = None

EXAMPLE = Path(__file__).resolve().parent.parent / "example_bottle.py"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 20  # seconds: the longest any single step may take
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if webdriver is None:
        missing.append("the selenium package")
    if missing:
        reason = "the browser test needs %s: apt-get install chromium chromium-driver; pip install selenium" % (
            ", ".join(missing)
        )
        if IN_CI:
            pytest.fail("CI=true: the browser test may not be skipped; " + reason)
        pytest.skip(reason)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(proc, port, log_path):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("the example site exited with %s:\n%s" % (proc.returncode, log_path.read_text()))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("the example site did not listen on port %d within %d s:\n%s" % (port, WAIT, log_path.read_text()))


@pytest.fixture
def browser(tmp_path):
    require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + ["--user-data-dir=%s" % (tmp_path / "chromium-profile")]:
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def site(tmp_path):
    """The example site in a subprocess, on a SQLite file in tmp_path; yields its base URL."""
    port = free_port()
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    log_path = tmp_path / "site.log"
    command = [sys.executable, str(EXAMPLE), "--db", "sqlite:///%s" % (tmp_path / "s.sqlite"), "--port", str(port)]
    env = dict(os.environ, SESSION_SECRET="browser test secret", PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(proc, port, log_path)
        yield "http://127.0.0.1:%d" % port
        assert not (workdir / "peewee_sessions.sqlite").exists(), "--db was ignored"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        print("example site's output:\n" + log_path.read_text())  # pytest shows it when the test fails


def session_cookie(driver):
    cookie = driver.get_cookie("connect.sid")
    assert cookie is not None, "no connect.sid cookie; the browser has %r" % driver.get_cookies()
    return cookie


def test_count_log_in_and_out(browser, site):
    wait = WebDriverWait(browser, WAIT)

    def text_of(element_id):
        return browser.find_element(By.ID, element_id).text

    def click_and_wait(button_css, path, element_id, text):
        """Submit a form and wait for the page it redirects to (clicks do not wait for navigation).

        The old page must go stale first: log-out redirects to the page it was on, so the URL alone
        says nothing, and reading the old document while it is replaced fails.
        """
        old_page = browser.find_element(By.TAG_NAME, "html")
        browser.find_element(By.CSS_SELECTOR, button_css).click()
        wait.until(EC.staleness_of(old_page))
        wait.until(EC.url_to_be(site + path))
        wait.until(EC.text_to_be_present_in_element((By.ID, element_id), text))

    # The counter lives in the session: a new one per load.
    browser.get(site + "/")
    assert text_of("views") == "1"
    browser.refresh()
    assert text_of("views") == "2"
    assert text_of("who") == "Nobody is signed in."
    before_login = session_cookie(browser)["value"]

    # Log in; markup in the name must come back as text.
    name = "Ada <b>Lovelace</b> & co"
    browser.get(site + "/login")
    browser.find_element(By.NAME, "name").send_keys(name)
    click_and_wait('form[action="/login"] button', "/sessions", "who", name)
    assert text_of("who") == "You are %s." % name

    cookie = session_cookie(browser)
    assert cookie["httpOnly"] is True
    assert "connect.sid" not in browser.execute_script("return document.cookie")
    assert cookie["value"] != before_login, "log-in kept the session id: regenerate() did not take effect"

    browser.get(site + "/")
    assert text_of("views") == "3"  # regenerate() kept the data under the new id
    assert text_of("who") == "Signed in as %s." % name

    # Log out: the session is gone, so the counter starts again.
    click_and_wait('form[action="/logout"] button', "/", "who", "Nobody is signed in.")
    assert text_of("views") == "1"
    assert session_cookie(browser)["value"] not in (before_login, cookie["value"])
    browser.get(site + "/sessions")
    assert text_of("who") == "Nobody is signed in. Log in"
