// The Node app of bench/http_bench.py: Express + express-session + connect-session-knex 5, with the
// routes of bench/http_apps.py (/incr reads and writes the session, /hello doesn't use it).
// Run with NODE_PATH=tests/node_app/node_modules. Environment: KNEX_CLIENT (pg | mysql2 | sqlite3),
// KNEX_CONNECTION (a URL, or a file for sqlite3), TABLE_NAME, SESSION_SECRET, PORT.
"use strict";

const express = require("express");
const session = require("express-session");
const knexConstructor = require("knex");
const { ConnectSessionKnexStore } = require("connect-session-knex");

const env = process.env;
const client = env.KNEX_CLIENT;
const knex = knexConstructor(
  client === "sqlite3"
    ? {
        client,
        connection: { filename: env.KNEX_CONNECTION },
        useNullAsDefault: true,
        // The Python apps' SQLite settings: WAL, a busy timeout.
        pool: {
          afterCreate: (conn, done) => {
            conn.configure("busyTimeout", 10000);
            conn.exec("PRAGMA journal_mode = wal; PRAGMA synchronous = normal", done);
          },
        },
      }
    : { client, connection: env.KNEX_CONNECTION },
);
const store = new ConnectSessionKnexStore({ knex, tableName: env.TABLE_NAME, cleanupInterval: 0 });

const app = express();
app.set("etag", false);
app.get("/hello", (req, res) => res.type("text").send("hello"));
app.use(
  session({
    store,
    secret: env.SESSION_SECRET,
    resave: false,
    saveUninitialized: false,
    cookie: { maxAge: 86400000, httpOnly: true, sameSite: "lax" },  // the Python apps' cookie
  }),
);
app.get("/incr", (req, res) => {
  req.session.n = (req.session.n || 0) + 1;
  res.type("text").send(String(req.session.n));
});

store.ready.then(
  () => {
    const server = app.listen(Number(env.PORT), "127.0.0.1", () => console.log("listening"));
    for (const signal of ["SIGTERM", "SIGINT"]) {
      process.on(signal, () => {
        setTimeout(() => process.exit(0), 1000).unref();
        server.close();
        knex.destroy().finally(() => process.exit(0));
      });
    }
  },
  (err) => {
    console.error("session store failed:", err);
    process.exit(1);
  },
);
