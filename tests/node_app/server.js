// A tiny Express app with express-session + connect-session-knex 5, for tests/test_node_interop.py.
// It shares a session table and a cookie with the Bottle test app. Configured by environment variables:
//   KNEX_CLIENT          pg | mysql2 | sqlite3
//   KNEX_CONNECTION      a URL for pg and mysql2, a file path for sqlite3
//   TABLE_NAME           session table (default "sessions")
//   SID_FIELD_NAME       session id column (default "sid")
//   CREATE_TABLE         "false" makes a missing table an error (default: create it)
//   CLEANUP_INTERVAL_MS  connect-session-knex's sweep of expired rows (default 60000; 0 disables)
//   SESSION_SECRET       cookie signing secret (required)
//   COOKIE_NAME          default "connect.sid"
//   COOKIE_MAX_AGE_MS    default 3600000 (1 hour)
//   PORT                 port on 127.0.0.1; 0 (the default) picks a free one
// Once the table is ready and the server listens, it prints "listening on http://127.0.0.1:<port>".
"use strict";

const express = require("express");
const session = require("express-session");
const knexConstructor = require("knex");
const { ConnectSessionKnexStore } = require("connect-session-knex");

const env = process.env;
if (!env.SESSION_SECRET) throw new Error("SESSION_SECRET is required");

const client = env.KNEX_CLIENT || "sqlite3";
const knex = knexConstructor(
  client === "sqlite3"
    ? {
        client,
        connection: { filename: env.KNEX_CONNECTION || "connect-session-knex.sqlite" },
        useNullAsDefault: true,
        // Another process (the Python app) shares the file: wait for its locks instead of failing.
        pool: { afterCreate: (conn, done) => { conn.configure("busyTimeout", 5000); done(); } },
      }
    : { client, connection: env.KNEX_CONNECTION },
);

// connect-session-knex 5: a named class export taking one options object (no `session` argument).
const store = new ConnectSessionKnexStore({
  knex,
  tableName: env.TABLE_NAME || "sessions",
  sidFieldName: env.SID_FIELD_NAME || "sid",
  createTable: env.CREATE_TABLE !== "false",
  cleanupInterval: Number(env.CLEANUP_INTERVAL_MS ?? 60000),
  onDbCleanupError: (err) => console.error("cleanup failed:", err),
});

const app = express();
app.use(
  session({
    store,
    secret: env.SESSION_SECRET,
    name: env.COOKIE_NAME || "connect.sid",
    resave: false,
    saveUninitialized: false,
    cookie: { maxAge: Number(env.COOKIE_MAX_AGE_MS || 3600000), sameSite: "lax" },
  }),
);

// The session's own keys, without the cookie.
const userData = (req) => {
  const { cookie, ...data } = req.session;
  return data;
};

app.get("/incr", (req, res) => {
  // ?maxAge=<ms> changes this session's lifetime (a negative one writes an already expired row).
  if (req.query.maxAge !== undefined) req.session.cookie.maxAge = Number(req.query.maxAge);
  req.session.n = (req.session.n || 0) + 1;
  res.type("text").send(String(req.session.n));
});

app.get("/whoami", (req, res) => res.json(userData(req)));

const login = (req, res) => {
  req.session.user = String(req.query.name);
  res.json(userData(req));
};
app.get("/login", login);
app.post("/login", login);

// Where Passport.js keeps the signed-in user: ?id=42 stores the number 42, ?name=x the string "x".
app.get("/passport-login", (req, res) => {
  req.session.passport = { user: req.query.id !== undefined ? Number(req.query.id) : String(req.query.name) };
  res.json(userData(req));
});

const logout = (req, res, next) => req.session.destroy((err) => (err ? next(err) : res.type("text").send("bye")));
app.get("/logout", logout);
app.post("/logout", logout);

store.ready.then(
  () => {
    const server = app.listen(Number(env.PORT || 0), "127.0.0.1", () => {
      console.log("listening on http://127.0.0.1:%d", server.address().port);
    });
  },
  (err) => {
    console.error("session store failed:", err);
    process.exit(1);
  },
);

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    setTimeout(() => process.exit(0), 1000).unref();
    knex.destroy().finally(() => process.exit(0));
  });
}
