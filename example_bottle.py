"""A small Bottle site on peewee-sessions: a visit counter, log-in and log-out.

It shows a counter kept in the session, session.regenerate() on log-in (against
session fixation) and session.destroy() on log-out. Run it with

    SESSION_SECRET='a long random string' python example_bottle.py

and open http://127.0.0.1:8080/. Sessions go to ./peewee_sessions.sqlite (made
on first run) unless --db names another database, as a playhouse.db_url URL:
postgresql://user@host/db, mysql://user@host/db or sqlite:///path/to/file.
"""

import argparse
import html
import os
import sys

import bottle
from playhouse.db_url import connect

from peewee_sessions import SessionPlugin

SECRET_VARIABLE = "SESSION_SECRET"
DEVELOPMENT_SECRET = "development only: set SESSION_SECRET"

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title></head>
<body>
<nav><a href="/">Home</a> | <a href="/me">Me</a> | {account}</nav>
<h1>{title}</h1>
{body}
</body>
</html>
"""

# Log-out changes state, so it is a POST (a GET link could be triggered by
# prefetching or by another site's <img>).
LOGOUT_FORM = '<form method="post" action="/logout" style="display:inline"><button>Log out</button></form>'

LOGIN_FORM = """<form method="post" action="/login">
<label>Name <input name="name" autofocus required></label>
<button>Log in</button>
</form>"""


def page(session, title, body):
    """A whole HTML page; the nav offers log-in or log-out depending on the session."""
    account = LOGOUT_FORM if "user" in session else '<a href="/login">Log in</a>'
    return PAGE.format(title=html.escape(title), account=account, body=body)


def session_secret():
    """The secret from the environment, or a fixed development one (with a warning)."""
    secret = os.environ.get(SECRET_VARIABLE)
    if secret:
        return secret
    print(
        "WARNING: %s is not set, so sessions are signed with a fixed development secret "
        "that anyone can read in example_bottle.py and use to forge cookies. "
        "Set %s to a long random string." % (SECRET_VARIABLE, SECRET_VARIABLE),
        file=sys.stderr,
    )
    return DEVELOPMENT_SECRET


def make_app(db=None, secret=None, **plugin_options):
    """The site as a bottle.Bottle app. db: a peewee database, None for ./peewee_sessions.sqlite."""
    app = bottle.Bottle()
    plugin_options.setdefault("error_status", 503)  # the database down: "try again", not a crash page
    app.install(SessionPlugin(db, secret=secret or session_secret(), **plugin_options))

    # The routes are defined inside the factory on purpose, and log-in and
    # log-out are closures over `app` (for app.get_url): the plugin must find
    # their `session` argument all the same.

    @app.get("/", name="home")
    def index(session):
        session["views"] = session.get("views", 0) + 1
        user = session.get("user")
        greeting = "Signed in as <b>%s</b>." % html.escape(user) if user else "Nobody is signed in."
        body = '<p>Page loads in this session: <span id="views">%d</span></p>\n<p id="who">%s</p>' % (
            session["views"],
            greeting,
        )
        return page(session, "Visit counter", body)

    @app.get("/login")
    def login_form(session):
        return page(session, "Log in", LOGIN_FORM)

    @app.post("/login")
    def login(session):
        name = (bottle.request.forms.getunicode("name") or "").strip()
        if not name:
            return page(session, "Log in", "<p>Please type a name.</p>\n" + LOGIN_FORM)
        # A new id for the signed-in session: an id planted in the browser
        # before log-in (session fixation) is worth nothing afterwards.
        session.regenerate()
        session["user"] = name
        bottle.redirect(app.get_url("me"))  # 303 See Other: the browser GETs /me

    @app.get("/me", name="me")
    def me(session):
        user = session.get("user")
        if user:
            body = '<p id="who">You are <b>%s</b>.</p>' % html.escape(user)
        else:
            body = '<p id="who">Nobody is signed in. <a href="/login">Log in</a></p>'
        return page(session, "Who am I", body)

    @app.post("/logout")
    def logout(session):
        session.destroy()  # deletes the row and clears the cookie
        bottle.redirect(app.get_url("home"))

    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", metavar="URL", help="database URL (default: ./peewee_sessions.sqlite)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    args = parser.parse_args(argv)
    app = make_app(connect(args.db) if args.db else None)
    bottle.run(app, host=args.host, port=args.port, quiet=False)


if __name__ == "__main__":
    main()
