/**
 * `npm start`: the whole stack on one machine, in the foreground. Postgres from
 * DATABASE_URL or an embedded one (data under .local/), Redis from UPSTASH_REDIS_REST_URL /
 * TOKEN, or REDIS_URL behind the local REST bridge, or else a throwaway `redis-server` from
 * PATH behind that bridge (as `npm test` runs one; see the README for why); migrations with
 * the Supabase CLI; demo data when the database is empty; every function behind the local
 * gateway; a job worker (`--no-worker` to skip), as production's cron would run; and, without
 * OPENAI_API_KEY, a stand-in model whose answers say so (`--no-stand-in` to skip). It
 * describes itself in .local/stack.json so `npm run worker|seed|migrate|token` reach the same
 * database and Redis. Ctrl-C stops everything.
 *
 *   npm start [-- --no-worker] [-- --no-stand-in]
 *
 * @module
 */
import postgres from "postgres";
import { createDeps } from "../../shared/deps.ts";
import { bootstrap, migrate, redact } from "./db.ts";
import { loadOrCreateDevKeys } from "./dev_auth.ts";
import { createGateway } from "./gateway.ts";
import { freePort, repoRoot, startEmbeddedPostgres, startRedisServer } from "./local_services.ts";
import { STAND_IN_MARK, startOpenAIStandIn } from "./openai_stand_in.ts";
import {
  localStackPath,
  readLocalStack,
  removeLocalStack,
  spawnServer,
  writeLocalStack,
} from "./stack.ts";
import { DEMO_USER_ID, isEmpty, seed } from "../testing/seed.ts";

const env = Deno.env;
const port = Number(env.get("PORT") ?? 54321);
const baseUrl = `http://127.0.0.1:${port}`;
const stops: (() => Promise<void>)[] = [];
const log = (msg: string) => console.log(`[rockout] ${msg}`);

const known = ["--no-worker", "--no-stand-in"];
const unknown = Deno.args.filter((a) => !known.includes(a));
if (unknown.length) {
  console.error(`unknown argument ${unknown[0]}; usage: npm start [-- --no-worker --no-stand-in]`);
  Deno.exit(2);
}
const runWorker = !Deno.args.includes("--no-worker");
const useStandIn = !Deno.args.includes("--no-stand-in");

/** True when something already listens on 127.0.0.1:`p`. */
function portInUse(p: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port: p }).close();
    return false;
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) return true;
    throw err;
  }
}

/** `sb_secret_…`, generated once under .local/. */
async function localSecretKey(): Promise<string> {
  const path = `${repoRoot}/.local/secret-key`;
  try {
    return (await Deno.readTextFile(path)).trim();
  } catch {
    const key = `sb_secret_local_${crypto.randomUUID().replaceAll("-", "")}`;
    await Deno.mkdir(`${repoRoot}/.local`, { recursive: true });
    await Deno.writeTextFile(path, key, { mode: 0o600 });
    return key;
  }
}

async function shutdown(code: number): Promise<never> {
  for (const stop of stops.reverse()) await stop().catch((err) => console.error(err));
  Deno.exit(code);
}
let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping`);
    shutdown(0);
  });
}

try {
  // Another `npm start` of this checkout: say so now, not after a confusing Postgres error.
  const other = await readLocalStack();
  if (other && (!env.get("DATABASE_URL") || new URL(other.baseUrl).port === String(port))) {
    throw new Error(
      `another npm start (pid ${other.pid}) is running at ${other.baseUrl} and holds ` +
        `${env.get("DATABASE_URL") ? `port ${port}` : ".local/postgres"}. Use that one (npm run ` +
        `worker|seed|migrate|token find it by themselves), or stop it first (Ctrl-C in its ` +
        `terminal, or kill ${other.pid}).`,
    );
  }
  if (portInUse(port)) {
    throw new Error(`port ${port} is already in use (another npm start?): stop it, or set PORT`);
  }
  const keys = await loadOrCreateDevKeys(`${repoRoot}/.local/jwt-signing-key.json`);
  env.set("SUPABASE_JWKS", JSON.stringify(keys.jwks));
  if (!env.get("SUPABASE_SECRET_KEYS")) {
    // A local stand-in for the project's secret API key (what a cron sends to jobs-worker).
    env.set("SUPABASE_SECRET_KEYS", JSON.stringify({ default: await localSecretKey() }));
  }
  if (!env.get("SUPABASE_URL")) env.set("SUPABASE_URL", baseUrl);

  // First, so a missing redis-server is said before Postgres starts.
  let ownRedis = false;
  if (!env.get("UPSTASH_REDIS_REST_URL") && !env.get("REDIS_URL")) {
    // Redis is required: the functions' limits, leases, breakers and caches run their Lua
    // there (one implementation). Without one configured, run redis-server as npm test does.
    log("REDIS_URL not set: starting redis-server (no persistence)");
    let server;
    try {
      server = await startRedisServer(freePort());
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      throw new Error(
        "no Redis: install redis-server (apt-get install redis-server / brew install redis), " +
          "or set REDIS_URL / UPSTASH_REDIS_REST_URL",
      );
    }
    stops.push(server.stop);
    env.set("REDIS_URL", server.url);
    ownRedis = true;
  }

  let databaseUrl = env.get("DATABASE_URL");
  const embedded = !databaseUrl;
  if (!databaseUrl) {
    log("DATABASE_URL not set: starting embedded Postgres");
    const pg = await startEmbeddedPostgres(`${repoRoot}/.local/postgres`, 54322);
    stops.push(pg.stop);
    log(`embedded Postgres data in ${pg.dataDir.replace(`${repoRoot}/`, "")}`);
    databaseUrl = pg.url;
    env.set("DATABASE_URL", databaseUrl);
  }
  await bootstrap(databaseUrl);
  log("applying migrations with the Supabase CLI");
  await migrate(databaseUrl);
  const admin = postgres(databaseUrl, { max: 2, onnotice: () => {} });
  if (await isEmpty(admin)) {
    const users = Number(env.get("SEED_USERS") ?? 500);
    const posts = Number(env.get("SEED_POSTS") ?? 5000);
    const songs = Number(env.get("SEED_SONGS") ?? 2000);
    const result = await seed(admin, { users, posts, songs });
    log(`seeded demo data: ${result.users} users, ${result.posts} posts in ${result.ms} ms`);
  }
  await admin.end();

  if (env.get("UPSTASH_REDIS_REST_URL")) {
    log(`Redis: Upstash at ${env.get("UPSTASH_REDIS_REST_URL")}`);
  } else {
    // Its own process, as Upstash is its own service: it doesn't share the functions' thread.
    const token = crypto.randomUUID();
    const bridge = await spawnServer(`${repoRoot}/scripts/dev/redis_bridge.ts`, freePort(), {
      REDIS_URL: env.get("REDIS_URL")!,
      UPSTASH_REDIS_REST_TOKEN: token,
    }, (line) => line.startsWith("http://"));
    stops.push(bridge.stop);
    env.set("UPSTASH_REDIS_REST_URL", bridge.output.find((l) => l.startsWith("http://"))!);
    env.set("UPSTASH_REDIS_REST_TOKEN", token);
    log(`Redis: ${env.get("REDIS_URL")} through the Upstash REST bridge at ${bridge.url}`);
  }

  // No key: the stand-in answers (marked), so replies, summaries and notifications appear.
  let standInUrl: string | null = null;
  if (!env.get("OPENAI_API_KEY") && useStandIn) {
    const standIn = startOpenAIStandIn();
    stops.push(() => standIn.close());
    standInUrl = standIn.baseUrl;
    env.set("OPENAI_API_KEY", "stand-in");
    env.set("OPENAI_BASE_URL", standInUrl);
    // Answers name their model: "stand-in", not a real one.
    for (const key of ["OPENAI_SMALL_MODEL", "OPENAI_LARGE_MODEL", "OPENAI_TRANSCRIBE_MODEL"]) {
      if (!env.get(key)) env.set(key, "stand-in");
    }
  }

  // The environment prepared above (the child processes below inherit it too): one deps for
  // every function of this process, as one isolate has.
  const deps = createDeps(env.toObject());
  stops.push(() => deps.close());
  const gateway = await createGateway({ deps, jwks: keys.jwks });
  const workers = Math.max(1, Number(env.get("WORKERS") ?? 1));
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, reusePort: workers > 1, onListen: () => {} },
    gateway.fetch,
  );
  stops.push(() => server.shutdown());
  for (let i = 1; i < workers; i++) {
    const worker = await spawnServer(
      `${repoRoot}/scripts/dev/serve.ts`,
      port,
      {},
      (l) => l === "ready",
    );
    stops.push(worker.stop);
  }
  if (workers > 1) log(`${workers} serving processes share port ${port}`);

  if (runWorker) {
    // Its own process, as production's cron-triggered jobs-worker runs apart from requests.
    const worker = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${repoRoot}/scripts/dev/worker.ts`],
      cwd: repoRoot,
      stdin: "null",
    }).spawn();
    stops.push(async () => {
      try {
        worker.kill("SIGTERM");
      } catch { /* already gone */ }
      await worker.status;
    });
  }

  // The file is the other npm start's while it runs (e.g. `npm test`'s smoke next to yours).
  if (!other) {
    await writeLocalStack({
      pid: Deno.pid,
      baseUrl,
      databaseUrl,
      redisUrl: env.get("REDIS_URL") ?? null,
      upstash: env.get("UPSTASH_REDIS_REST_URL")
        ? { url: env.get("UPSTASH_REDIS_REST_URL")!, token: env.get("UPSTASH_REDIS_REST_TOKEN")! }
        : null,
      openaiStandIn: standInUrl,
    });
    stops.push(() => removeLocalStack(Deno.pid));
  }

  const token = await keys.mint(DEMO_USER_ID, {
    email: "demo@rockout.local",
    issuer: `${baseUrl}/auth/v1`,
  });
  const redisLine = env.get("REDIS_URL")
    ? `REDIS_URL=${env.get("REDIS_URL")}${
      ownRedis ? " (a redis-server of this npm start, no persistence)" : ""
    } (functions reach it through the Upstash REST bridge ${env.get("UPSTASH_REDIS_REST_URL")})`
    : `UPSTASH_REDIS_REST_URL=${env.get("UPSTASH_REDIS_REST_URL")}`;
  const aiLine = standInUrl
    ? `AI: no OPENAI_API_KEY, so a stand-in model at ${standInUrl} answers; its texts start ` +
      `with "${STAND_IN_MARK}". Set OPENAI_API_KEY for real ones.`
    : env.get("OPENAI_API_KEY")
    ? "AI: OpenAI (OPENAI_API_KEY)"
    : "AI: not configured (--no-stand-in): persona replies wait in the queue";
  console.log(`\nrockout-edge is running at ${baseUrl}\n`);
  for (const slug of gateway.slugs) console.log(`  ${baseUrl}/functions/v1/${slug}`);
  console.log(`
DATABASE_URL=${embedded ? databaseUrl : redact(databaseUrl)}
${redisLine}
${aiLine}
jobs: ${
    runWorker
      ? "a worker runs queued jobs (one log line per job; --no-worker to skip)"
      : "no worker (--no-worker): run npm run worker, or call jobs-worker/run"
  }
npm run worker | seed | migrate | token use this stack (${
    localStackPath().replace(`${repoRoot}/`, "")
  }).

demo user ${DEMO_USER_ID}; its access token (1 h; npm run token for a new one):

export TOKEN=${token}

try:
  curl -H "Authorization: Bearer $TOKEN" "${baseUrl}/functions/v1/feed?kind=following&limit=5"

jobs-worker (cron): curl -X POST -H "apikey: $(cat .local/secret-key)" ${baseUrl}/functions/v1/jobs-worker/run
`);
  console.log("Ctrl-C stops everything.");
  await server.finished;
} catch (err) {
  console.error(`[rockout] start failed: ${err instanceof Error ? err.message : err}`);
  await shutdown(1);
}
