"""A small Bottle site on peewee-sessions: a visit counter, log-in, log-out and "Your sessions".

It shows a counter kept in the session, session.regenerate() on log-in (against
session fixation), session.destroy() on log-out, and a page listing the user's
sessions on every device with a button that logs the other devices out. Run it with

    SESSION_SECRET='a long random string' python example_bottle.py

and open http://127.0.0.1:8080/. Sessions go to ./peewee_sessions.sqlite (made
on first run) unless --db names another database, as a playhouse.db_url URL:
postgresql://user@host/db, mysql://user@host/db or sqlite:///path/to/file.

example_flask.py is the same site in Flask. Both read and write one table with the
same cookie name and secret: run both on one --db (the Flask one on port 8081) and
a log-in on either shows on the other.
"""

import argparse
import datetime
import html
import os
import re
import socketserver
import sys
from wsgiref.simple_server import WSGIServer

import bottle
from playhouse.db_url import connect

from peewee_sessions import PeeweeSessionStore, SessionPlugin

SECRET_VARIABLE = "SESSION_SECRET"
DEVELOPMENT_SECRET = "development only: set SESSION_SECRET"
FRAMEWORK = "Bottle"
TWIN = "<code>example_flask.py</code> (port 8081)"  # the same site in the other framework

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


def page(session, title, body):
    """A whole HTML page; the header offers log-in or log-out depending on the session."""
    links = [
        '<a href="%s"%s>%s</a>' % (path, ' aria-current="page"' if path == bottle.request.path else "", text)
        for path, text in NAV_LINKS
    ]
    links.append(LOGOUT_FORM if USER_KEY in session else LOGIN_BUTTON)
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


def make_app(db=None, secret=None, **plugin_options):
    """The site as a bottle.Bottle app. db: a peewee database, None for ./peewee_sessions.sqlite."""
    store = PeeweeSessionStore(db, user_key=USER_KEY) if CAN_LIST_SESSIONS else PeeweeSessionStore(db)
    app = bottle.Bottle()
    plugin_options.setdefault("error_status", 503)  # the database down: "try again", not a crash page
    app.install(SessionPlugin(store, secret=secret or session_secret(), **plugin_options))

    # The routes are defined inside the factory on purpose, and some are closures
    # over `app` (for app.get_url): the plugin must find their `session` argument all the same.

    @app.get("/", name="home")
    def index(session):
        session["views"] = session.get("views", 0) + 1
        user = session.get(USER_KEY)
        greeting = "Signed in as <b>%s</b>." % html.escape(user) if user else "Nobody is signed in."
        body = (
            '<div class="card">\n<p><span id="views">%d</span> page loads in this session</p>\n'
            '<p id="who">%s</p>\n</div>\n' % (session["views"], greeting)
        ) + TRY_IT.format(twin=TWIN)
        return page(session, "Visit counter", body)

    @app.get("/login")
    def login_form(session):
        return page(session, "Log in", LOGIN_FORM)

    @app.post("/login")
    def login(session):
        name = (bottle.request.forms.getunicode("name") or "").strip()
        if not name:
            return page(session, "Log in", '<p class="notice">Please type a name.</p>\n' + LOGIN_FORM)
        # A new id for the signed-in session: an id planted in the browser
        # before log-in (session fixation) is worth nothing afterwards.
        session.regenerate()
        session[USER_KEY] = name
        session["user_agent"] = bottle.request.headers.get("User-Agent", "")[:300]  # for "Your sessions"
        session["logged_in_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        bottle.redirect(app.get_url("sessions"))  # 303 See Other: the browser GETs /sessions

    @app.get("/sessions", name="sessions")
    def your_sessions(session):
        user = session.get(USER_KEY)
        if not user:
            return page(session, "Your sessions",
                        '<p id="who">Nobody is signed in. <a href="/login">Log in</a></p>')
        body = ['<p id="who">You are <b>%s</b>.</p>' % html.escape(user)]
        ended = bottle.request.query.get("ended", "")
        if ended.isdigit():
            plural = "" if ended == "1" else "s"
            body.append('<p class="notice">Logged out %s other device%s.</p>' % (ended, plural))
        if not CAN_LIST_SESSIONS:
            body.append('<p class="muted">This peewee-sessions cannot list sessions by user '
                        "(PeeweeSessionStore.sessions_of is missing).</p>")
            return page(session, "Your sessions", "\n".join(body))
        sessions = store.sessions_of(user)
        body.append('<div class="card">\n%s\n</div>' % sessions_table(sessions, session.id))
        if len(sessions) > 1:
            body.append('<form method="post" action="/logout-others">'
                        '<button class="quiet">Log out other devices</button></form>')
        else:
            body.append('<p class="muted">No other device is logged in as you.</p>')
        return page(session, "Your sessions", "\n".join(body))

    @app.post("/logout-others")
    def logout_others(session):
        user = session.get(USER_KEY)
        ended = store.destroy_sessions_of(user, keep=session.id) if user and CAN_LIST_SESSIONS else 0
        bottle.redirect(app.get_url("sessions") + "?ended=%d" % ended)

    @app.post("/logout")
    def logout(session):
        session.destroy()  # deletes the row and clears the cookie
        bottle.redirect(app.get_url("home"))

    return app


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """Bottle's default server with a thread per connection. The default serves one connection at
    a time, and browsers open spare connections ahead of need: one browser's idle spare would keep
    every other browser waiting."""

    daemon_threads = True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", metavar="URL", help="database URL (default: ./peewee_sessions.sqlite)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    args = parser.parse_args(argv)
    app = make_app(connect(args.db) if args.db else None)
    bottle.run(app, host=args.host, port=args.port, quiet=False, server_class=ThreadingWSGIServer)


if __name__ == "__main__":
    main()
