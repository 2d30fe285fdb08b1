/**
 * `npm start`: the whole stack on one machine, in the foreground. Postgres from
 * DATABASE_URL or an embedded one (data under .local/), Redis from UPSTASH_REDIS_REST_URL /
 * TOKEN, or REDIS_URL behind the local REST bridge, or in-process stores; migrations with
 * the Supabase CLI; demo data when the database is empty; every function behind the local
 * gateway. Ctrl-C stops everything.
 *
 * @module
 */
import postgres from "postgres";
import { bootstrap, migrate } from "./db.ts";
import { loadOrCreateDevKeys } from "./dev_auth.ts";
import { freePort, type LocalService, repoRoot, startEmbeddedPostgres } from "./local_services.ts";
import { spawnServer } from "./stack.ts";
import { DEMO_USER_ID, isEmpty, seed } from "./seed.ts";

const env = Deno.env;
const port = Number(env.get("PORT") ?? 54321);
const baseUrl = `http://127.0.0.1:${port}`;
const stops: (() => Promise<void>)[] = [];
const log = (msg: string) => console.log(`[rockout] ${msg}`);

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
  const keys = await loadOrCreateDevKeys(`${repoRoot}/.local/jwt-signing-key.json`);
  env.set("SUPABASE_JWKS", JSON.stringify(keys.jwks));
  if (!env.get("SUPABASE_SECRET_KEYS")) {
    // A local stand-in for the project's secret API key (what a cron sends to jobs-worker).
    env.set("SUPABASE_SECRET_KEYS", JSON.stringify({ default: await localSecretKey() }));
  }
  if (!env.get("SUPABASE_URL")) env.set("SUPABASE_URL", baseUrl);

  let databaseUrl = env.get("DATABASE_URL");
  if (!databaseUrl) {
    log("DATABASE_URL not set: starting embedded Postgres (data in .local/postgres)");
    const pg: LocalService = await startEmbeddedPostgres(`${repoRoot}/.local/postgres`, 54322);
    stops.push(pg.stop);
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
    const result = await seed(admin, { users, posts });
    log(`seeded demo data: ${result.users} users, ${result.posts} posts in ${result.ms} ms`);
  }
  await admin.end();

  if (env.get("UPSTASH_REDIS_REST_URL")) {
    log(`Redis: Upstash at ${env.get("UPSTASH_REDIS_REST_URL")}`);
  } else if (env.get("REDIS_URL")) {
    // Its own process, as Upstash is its own service: it doesn't share the functions' thread.
    const token = crypto.randomUUID();
    const bridge = await spawnServer(`${repoRoot}/scripts/redis_bridge.ts`, freePort(), {
      REDIS_URL: env.get("REDIS_URL")!,
      UPSTASH_REDIS_REST_TOKEN: token,
    }, (line) => line.startsWith("http://"));
    stops.push(bridge.stop);
    env.set("UPSTASH_REDIS_REST_URL", bridge.output.find((l) => l.startsWith("http://"))!);
    env.set("UPSTASH_REDIS_REST_TOKEN", token);
    log(`Redis: ${env.get("REDIS_URL")} through the Upstash REST bridge at ${bridge.url}`);
  } // else: shared/redis.ts warns that limits, breakers and caches are per process

  const { createGateway } = await import("./gateway.ts");
  const gateway = await createGateway({ jwks: keys.jwks });
  const workers = Math.max(1, Number(env.get("WORKERS") ?? 1));
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, reusePort: workers > 1, onListen: () => {} },
    gateway.fetch,
  );
  stops.push(() => server.shutdown());
  for (let i = 1; i < workers; i++) {
    const worker = await spawnServer(
      `${repoRoot}/scripts/serve.ts`,
      port,
      {},
      (l) => l === "ready",
    );
    stops.push(worker.stop);
  }
  if (workers > 1) log(`${workers} serving processes share port ${port}`);

  const token = await keys.mint(DEMO_USER_ID, {
    email: "demo@rockout.local",
    issuer: `${baseUrl}/auth/v1`,
  });
  console.log(`\nrockout-edge is running at ${baseUrl}\n`);
  for (const slug of gateway.slugs) console.log(`  ${baseUrl}/functions/v1/${slug}`);
  console.log(
    `\ndemo user ${DEMO_USER_ID}, access token (1 h; npm run token for a new one):\n\n${token}\n`,
  );
  console.log(`try:\n  curl -H "Authorization: Bearer $TOKEN" ${baseUrl}/functions/v1/feed\n`);
  console.log(
    `jobs-worker (cron): curl -X POST -H "apikey: $(cat .local/secret-key)" ${baseUrl}/functions/v1/jobs-worker/run\n`,
  );
  console.log("Ctrl-C stops everything.");
  await server.finished;
} catch (err) {
  console.error(`[rockout] start failed: ${err instanceof Error ? err.message : err}`);
  await shutdown(1);
}
