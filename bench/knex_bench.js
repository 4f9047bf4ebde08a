// connect-session-knex's own benchmark: COUNT sequential set() calls, as its bench/ does.
// Run by bench/store_bench.py with NODE_PATH pointing at tests/node_app/node_modules.
const { ConnectSessionKnexStore } = require("connect-session-knex");
const knexLib = require("knex");

async function main() {
  const client = process.env.KNEX_CLIENT;
  const connection = client === "sqlite3" ? { filename: process.env.KNEX_CONNECTION } : process.env.KNEX_CONNECTION;
  const knex = knexLib({ client, connection, useNullAsDefault: true });
  const store = new ConnectSessionKnexStore({ knex, tableName: process.env.TABLE_NAME, cleanupInterval: 0 });
  await store.ready;
  const count = Number(process.env.COUNT || 10000);
  const set = (sid, sess) => new Promise((resolve, reject) => store.set(sid, sess, (err) => (err ? reject(err) : resolve())));
  const start = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    await set("knex-" + i, { cookie: { maxAge: 2000, expires: new Date() }, name: "sample name" });
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  console.log((count / seconds).toFixed(1));
  await knex.destroy();
}

main().catch((err) => { console.error(err); process.exit(1); });
