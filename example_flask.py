"""The same small site as example_bottle.py, in Flask, on peewee-sessions' Flask session interface.

A visit counter, log-in, log-out and "Your sessions", as in example_bottle.py: flask.session is a
server-side session (session.regenerate() on log-in, session.destroy() on log-out). Run it with

    SESSION_SECRET='a long random string' python example_flask.py

and open http://127.0.0.1:8081/. Sessions go to ./peewee_sessions.sqlite (made
on first run) unless --db names another database, as a playhouse.db_url URL:
postgresql://user@host/db, mysql://user@host/db or sqlite:///path/to/file.

It uses example_bottle.py's table, cookie name (connect.sid) and secret: run both on one --db
(the Bottle one on port 8080) and a log-in on either shows on the other.
"""

import argparse
import datetime
import html
import os
import re
import sys

import flask
from playhouse.db_url import connect

from peewee_sessions import PeeweeSessionStore

try:
    from peewee_sessions import FlaskSessionInterface
except ImportError:  # a peewee-sessions from before the Flask interface: main() says so
    FlaskSessionInterface = None

SECRET_VARIABLE = "SESSION_SECRET"
DEVELOPMENT_SECRET = "development only: set SESSION_SECRET"
FRAMEWORK = "Flask"
TWIN = "<code>example_bottle.py</code> (port 8080)"  # the same site in the other framework
MISSING_INTERFACE = (
    "example_flask.py needs peewee_sessions.FlaskSessionInterface, which this peewee-sessions "
    "does not have: install a version with the Flask session interface"
)

# `user_id` is the session key the store indexes: store.sessions_of(user_id) finds a user's
# sessions through it. Older peewee-sessions has neither, and the site then runs without that page.
USER_KEY = "user_id"
CAN_LIST_SESSIONS = hasattr(PeeweeSessionStore, "sessions_of")

CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --accent: #2f5bea; --paper: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--paper); color: var(--ink);
       font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { display: flex; flex-wrap: wrap; align-items: center; justify-content: space-between; gap: 1rem;
         padding: .75rem 2rem; background: #fff; border-bottom: 1px solid var(--line); }
.site { color: var(--ink); font-weight: 700; font-size: 1.15rem; text-decoration: none; }
.site small { color: var(--muted); font-weight: 400; font-size: .8rem; margin-left: .4rem; }
nav { display: flex; align-items: center; gap: 1.5rem; }
nav a { color: var(--muted); text-decoration: none; }
nav a:hover, nav a[aria-current] { color: var(--ink); }
nav a[aria-current] { font-weight: 600; }
nav form { margin: 0; }
button, a.button { display: inline-block; padding: .45rem 1rem; border: 1px solid var(--accent);
                   border-radius: 6px; background: var(--accent); color: #fff; font: inherit;
                   font-weight: 600; text-decoration: none; cursor: pointer; }
button:hover, a.button:hover { filter: brightness(1.1); }
button.quiet { background: #fff; color: var(--accent); }
nav a.button { color: #fff; }
main { max-width: 50rem; margin: 2.5rem auto; padding: 0 2rem; }
h1 { margin: 0 0 1.25rem; font-size: 1.75rem; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 1.5rem;
        margin-bottom: 1.25rem; }
.card > :first-child { margin-top: 0; }
.card > :last-child { margin-bottom: 0; }
h2 { margin: 0 0 .75rem; font-size: 1.1rem; }
ul { padding-left: 1.25rem; }
li + li { margin-top: .4rem; }
code { font-size: .9em; }
main a { color: var(--accent); }
#views { display: block; font-size: 3rem; font-weight: 700; line-height: 1.1; color: var(--accent); }
.muted { color: var(--muted); }
.notice { background: #e3f9e5; border: 1px solid #91e697; border-radius: 6px; padding: .6rem 1rem; }
label { display: block; font-weight: 600; margin-bottom: .35rem; }
input { width: 100%; max-width: 20rem; padding: .45rem .6rem; border: 1px solid #cbd2d9;
        border-radius: 6px; font: inherit; margin-bottom: 1rem; }
table { width: 100%; border-collapse: collapse; }
th, td { padding: .55rem .5rem; text-align: left; border-bottom: 1px solid var(--line); }
td + td, .badge { white-space: nowrap; }
th { color: var(--muted); font-size: .85rem; font-weight: 600; }
.badge { margin-left: .4rem; padding: .05rem .5rem; border-radius: 999px; background: #e3f9e5;
         color: #05400a; font-size: .8rem; font-weight: 600; }
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Session demo</title>
<style>{css}</style>
</head>
<body>
<header>
<a class="site" href="/">Session demo <small>on {framework}</small></a>
<nav>{nav}</nav>
</header>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"""

NAV_LINKS = [("/", "Home"), ("/sessions", "Your sessions")]

# Log-out changes state, so it is a POST (a GET link could be triggered by
# prefetching or by another site's <img>); the cookie's SameSite=Lax keeps
# other sites from POSTing with it.
LOGOUT_FORM = '<form method="post" action="/logout"><button>Log out</button></form>'
LOGIN_BUTTON = '<a class="button" href="/login">Log in</a>'

TRY_IT = """<div class="card">
<h2>Try it</h2>
<ul>
<li>Reload: the count goes up. It lives on the server, in the session table; the cookie holds only
the session's signed id.</li>
<li>Log in with the same name from a second browser, then see both in <a href="/sessions">Your
sessions</a> and log the other one out.</li>
<li>Run {twin} on the same <code>--db</code>: it shares this session (same table, cookie and secret).</li>
</ul>
</div>"""

LOGIN_FORM = """<form method="post" action="/login" class="card">
<p class="muted">Any name works: there is no password. This site only demonstrates sessions.</p>
<label for="name">Name</label>
<input id="name" name="name" autofocus required autocomplete="username">
<div><button>Log in</button></div>
</form>"""


def page(title, body):
    """A whole HTML page; the header offers log-in or log-out depending on the session."""
    links = [
        '<a href="%s"%s>%s</a>' % (path, ' aria-current="page"' if path == flask.request.path else "", text)
        for path, text in NAV_LINKS
    ]
    links.append(LOGOUT_FORM if USER_KEY in flask.session else LOGIN_BUTTON)
    return PAGE.format(title=html.escape(title), css=CSS, framework=FRAMEWORK, nav="\n".join(links),
                       body=body)


# Browsers and systems by a User-Agent token; the first match wins (Chrome's says Safari too).
BROWSERS = [("Edge", r"Edg/(\d+)"), ("Opera", r"OPR/(\d+)"), ("Firefox", r"Firefox/(\d+)"),
            ("Headless Chrome", r"HeadlessChrome/(\d+)"), ("Chrome", r"Chrome/(\d+)"),
            ("Safari", r"Version/(\d+).*Safari/")]
SYSTEMS = [("Android", "Android"), ("iPhone", "iPhone"), ("iPad", "iPad"), ("Windows", "Windows"),
           ("macOS", "Mac OS X"), ("ChromeOS", "CrOS"), ("Linux", "Linux")]


def short_user_agent(agent):
    """'Chrome 120 on Linux' from a User-Agent header; its first 40 characters when no browser is known."""
    agent = agent or ""
    system = next((name for name, token in SYSTEMS if token in agent), None)
    for name, pattern in BROWSERS:
        match = re.search(pattern, agent)
        if match:
            browser = "%s %s" % (name, match.group(1))
            return "%s on %s" % (browser, system) if system else browser
    if len(agent) > 40:
        return agent[:40] + "…"
    return agent or "Unknown device"


def show_time(iso_text):
    """'2026-12-07 21:30 UTC' from ISO-8601 text as the session holds it; '?' when there is none."""
    try:
        when = datetime.datetime.fromisoformat(iso_text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return "?"
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def sessions_table(sessions, current_id):
    """The user's sessions as an HTML table: this device first, then the latest log-in first."""
    newest_first = sorted(sessions.items(), key=lambda item: str(item[1].get("logged_in_at")), reverse=True)
    rows = []
    for sid, sess in sorted(newest_first, key=lambda item: item[0] != current_id):  # a stable sort
        badge = ' <span class="badge">this device</span>' if sid == current_id else ""
        rows.append("<tr><td>%s%s</td><td>%s</td><td>%s</td></tr>" % (
            html.escape(short_user_agent(sess.get("user_agent"))), badge,
            show_time(sess.get("logged_in_at")), show_time((sess.get("cookie") or {}).get("expires"))))
    head = "<tr><th>Device</th><th>Logged in</th><th>Expires</th></tr>"
    body = "\n".join(rows)
    return '<table id="sessions">\n<thead>%s</thead>\n<tbody>\n%s\n</tbody>\n</table>' % (head, body)


def session_secret():
    """The secret from the environment, or a fixed development one (with a warning)."""
    secret = os.environ.get(SECRET_VARIABLE)
    if secret:
        return secret
    print(
        "WARNING: %s is not set, so sessions are signed with a fixed development secret "
        "that anyone can read in this example and use to forge cookies. "
        "Set %s to a long random string." % (SECRET_VARIABLE, SECRET_VARIABLE),
        file=sys.stderr,
    )
    return DEVELOPMENT_SECRET


def make_app(db=None, secret=None, **interface_options):
    """The site as a flask.Flask app. db: a peewee database, None for ./peewee_sessions.sqlite."""
    if FlaskSessionInterface is None:
        raise RuntimeError(MISSING_INTERFACE)
    store = PeeweeSessionStore(db, user_key=USER_KEY) if CAN_LIST_SESSIONS else PeeweeSessionStore(db)
    app = flask.Flask(__name__)
    app.secret_key = secret or session_secret()
    # express-session's cookie name, as example_bottle.py: both sites then share the browser's cookie.
    app.config["SESSION_COOKIE_NAME"] = "connect.sid"
    app.session_interface = FlaskSessionInterface(store, **interface_options)
    session = flask.session  # the current request's session (a proxy), named as in example_bottle.py

    @app.get("/")
    def index():
        session["views"] = session.get("views", 0) + 1
        user = session.get(USER_KEY)
        greeting = "Signed in as <b>%s</b>." % html.escape(user) if user else "Nobody is signed in."
        body = (
            '<div class="card">\n<p><span id="views">%d</span> page loads in this session</p>\n'
            '<p id="who">%s</p>\n</div>\n' % (session["views"], greeting)
        ) + TRY_IT.format(twin=TWIN)
        return page("Visit counter", body)

    @app.get("/login")
    def login_form():
        return page("Log in", LOGIN_FORM)

    @app.post("/login")
    def login():
        name = flask.request.form.get("name", "").strip()
        if not name:
            return page("Log in", '<p class="notice">Please type a name.</p>\n' + LOGIN_FORM)
        # A new id for the signed-in session: an id planted in the browser
        # before log-in (session fixation) is worth nothing afterwards.
        session.regenerate()
        session[USER_KEY] = name
        session["user_agent"] = flask.request.headers.get("User-Agent", "")[:300]  # for "Your sessions"
        session["logged_in_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        return flask.redirect(flask.url_for("your_sessions"), 303)  # See Other: the browser GETs /sessions

    @app.get("/sessions")
    def your_sessions():
        user = session.get(USER_KEY)
        if not user:
            return page("Your sessions", '<p id="who">Nobody is signed in. <a href="/login">Log in</a></p>')
        body = ['<p id="who">You are <b>%s</b>.</p>' % html.escape(user)]
        ended = flask.request.args.get("ended", "")
        if ended.isdigit():
            plural = "" if ended == "1" else "s"
            body.append('<p class="notice">Logged out %s other device%s.</p>' % (ended, plural))
        if not CAN_LIST_SESSIONS:
            body.append('<p class="muted">This peewee-sessions cannot list sessions by user '
                        "(PeeweeSessionStore.sessions_of is missing).</p>")
            return page("Your sessions", "\n".join(body))
        sessions = store.sessions_of(user)
        body.append('<div class="card">\n%s\n</div>' % sessions_table(sessions, session.id))
        if len(sessions) > 1:
            body.append('<form method="post" action="/logout-others">'
                        '<button class="quiet">Log out other devices</button></form>')
        else:
            body.append('<p class="muted">No other device is logged in as you.</p>')
        return page("Your sessions", "\n".join(body))

    @app.post("/logout-others")
    def logout_others():
        user = session.get(USER_KEY)
        ended = store.destroy_sessions_of(user, keep=session.id) if user and CAN_LIST_SESSIONS else 0
        return flask.redirect(flask.url_for("your_sessions", ended=ended), 303)

    @app.post("/logout")
    def logout():
        session.destroy()  # deletes the row and clears the cookie
        return flask.redirect(flask.url_for("index"), 303)

    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", metavar="URL", help="database URL (default: ./peewee_sessions.sqlite)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8081, help="port to listen on (default: %(default)s)")
    args = parser.parse_args(argv)
    if FlaskSessionInterface is None:
        sys.exit("error: " + MISSING_INTERFACE)
    app = make_app(connect(args.db) if args.db else None)
    app.run(host=args.host, port=args.port)  # threaded, as example_bottle.py's server


if __name__ == "__main__":
    main()
