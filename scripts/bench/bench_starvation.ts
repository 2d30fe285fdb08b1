/**
 * Benchmark (not a test): can slow searches starve the database pool? One isolate (pool of
 * DB_POOL_MAX=4) over 100k profiles and 200k songs: 20 users keep 40 pathological searches
 * in flight (2 each: 64-character profile prefixes, and recall texts stuffed with "or"),
 * while 10 other users read posts (GET /posts/:id, 5/s each, caches off so every read needs
 * a pool connection) and /health is polled. Reports the readers' latency, /health's answers, the
 * searches' answers and the pool's counters.
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379 \
 *     npm run bench:starvation -- [seconds=20] [profiles=100000] [songs=200000]
 *
 * Env: BENCH_RECALL=0 (profile searches only), BENCH_SEARCH_CYCLE_MS (250), BENCH_READERS
 * (10), BENCH_ATTACKERS (20); any app setting, e.g. MIN_IN_FLIGHT=512 to keep admission
 * control from shedding, so what is left is the pool.
 *
 * Rate limits are lifted (searches and recall): what is measured is the pool under the
 * searches' concurrency, not the per-minute limits that would stop most of them first.
 *
 * @module
 */
import { settleBackground } from "../../shared/http/background.ts";
import { createApp as createHealthApp } from "../../functions/health/app.ts";
import { createApp as createPostsApp } from "../../functions/posts/app.ts";
import { createApp as createProfilesApp } from "../../functions/profiles/app.ts";
import { createApp as createRecallApp } from "../../functions/recall-resolve/app.ts";
import { seed } from "../testing/seed.ts";
import { functionTestEnv } from "../testing/test_env.ts";

const seconds = Number(Deno.args[0] ?? 20);
const profiles = Number(Deno.args[1] ?? 100_000);
const songs = Number(Deno.args[2] ?? 200_000);
const attackers = Number(Deno.env.get("BENCH_ATTACKERS") ?? 20);
const perAttacker = 2;
const readers = Number(Deno.env.get("BENCH_READERS") ?? 10);
const readIntervalMs = 200; // each reader: one read every 200 ms
const healthIntervalMs = 100;
/**
 * Each of the 40 search slots starts a search at most every 250 ms: 160 searches/s offered,
 * 8× what 40 searches of 1.9 s each offered before the fix (21/s).
 */
const searchCycleMs = Number(Deno.env.get("BENCH_SEARCH_CYCLE_MS") ?? 250);
/** BENCH_RECALL=0: profile searches only (recall-resolve also writes a thread per request). */
const recallShare = Deno.env.get("BENCH_RECALL") !== "0";

/**
 * App settings given to this process (`MIN_IN_FLIGHT=512 npm run bench:starvation`), without
 * the ones the test environment sets itself, nor OpenAI's: the catalog is the only recall
 * provider asked.
 */
const shellSettings = Object.fromEntries(
  Object.entries(Deno.env.toObject()).filter(([name]) =>
    !/^(DATABASE_URL|SUPABASE_DB_URL|SUPABASE_JWKS|REDIS_PREFIX|UPSTASH_REDIS_REST_.*|OPENAI_.*)$/
      .test(name)
  ),
);
const env = await functionTestEnv({
  env: {
    ...shellSettings,
    CACHE_DISABLED: "true",
    LOG_REQUESTS: "false",
    PROFILE_SEARCH_RATE_LIMIT_PER_MIN: "1000000",
    RECALL_RATE_LIMIT_PER_MIN: "1000000",
    RECALL_RATE_LIMIT_PER_HOUR: "1000000",
    RECALL_CONCURRENCY: "1000",
    FEED_RATE_LIMIT_PER_MIN: "1000000",
    ANON_READ_RATE_LIMIT_PER_MIN: "1000000", // /health is polled 10 times a second
  },
});
const seedStart = performance.now();
await seed(env.db.sql, { users: profiles, posts: 2000, follows: 0, likes: 0, songs, seed: 7 });
console.log(
  `seeded ${profiles} profiles, ${songs} songs, 2000 posts in ${
    Math.round(performance.now() - seedStart)
  } ms`,
);
const userIds: string[] =
  (await env.db.sql`select id from profiles order by id limit ${attackers + readers}`).map((r) =>
    r.id
  );
const postIds: string[] = (await env.db.sql`select id from posts where status = 'published'`).map((
  r,
) => r.id);
const tokens = await Promise.all(userIds.map((id) => env.keys.mint(id)));
// One isolate: every app on the same deps (one pool, its gate and counters), as the gateway
// mounts them.
const profilesApp = createProfilesApp(env.deps);
const postsApp = createPostsApp(env.deps);
const healthApp = createHealthApp(env.deps);
const recallApp = createRecallApp(env.deps);
const db = env.deps.db;

const profileQueries = [
  "user_".repeat(13).slice(0, 64),
  "rusty synth ".repeat(6).slice(0, 64),
  "u s e r a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2".slice(0, 64),
  "user user user user user user user user user user user user user",
];
let seq = 0;
const recallText = () => `${"or ".repeat(150)}midnight or ferry or falling ${seq++}`;

interface Sample {
  ms: number;
  status: number;
  /** Server-Timing durations (db, redis, …) of the answer. */
  timing?: Record<string, number>;
}
const firstBodies = new Map<string, string>();

async function timedCall(
  what: string,
  into: Sample[],
  call: () => Response | Promise<Response>,
): Promise<number> {
  const start = performance.now();
  let status = 0;
  let timing: Record<string, number> | undefined;
  try {
    const res = await call();
    status = res.status;
    timing = Object.fromEntries(
      [...(res.headers.get("server-timing") ?? "").matchAll(/(\w+);dur=([\d.]+)/g)]
        .map((m) => [m[1], Number(m[2])]),
    );
    const key = `${what} ${status}`;
    if (status !== 200 && !firstBodies.has(key)) firstBodies.set(key, await res.text());
    else await res.body?.cancel();
  } catch {
    status = -1;
  }
  into.push({ ms: performance.now() - start, status, timing });
  return status;
}

const bearer = (i: number) => ({ authorization: `Bearer ${tokens[i]}` });
const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

function summary(name: string, list: Sample[]) {
  const ms = list.map((s) => s.ms).sort((a, b) => a - b);
  const at = (p: number) => Math.round(ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]);
  const statuses: Record<string, number> = {};
  for (const s of list) statuses[s.status] = (statuses[s.status] ?? 0) + 1;
  const ok = list.filter((s) => s.status === 200).map((s) => s.ms).sort((a, b) => a - b);
  return {
    what: name,
    requests: list.length,
    ok_p95_ms: ok.length
      ? Math.round(ok[Math.min(ok.length - 1, Math.floor(0.95 * ok.length))])
      : "-",
    p50_ms: at(0.5),
    p95_ms: at(0.95),
    p99_ms: at(0.99),
    max_ms: Math.round(ms[ms.length - 1]),
    statuses: JSON.stringify(statuses),
    // Where the answers' time went (Server-Timing means): the pool wait is in `db`.
    mean_server_ms: JSON.stringify(meanTiming(list)),
  };
}

function meanTiming(list: Sample[]): Record<string, number> {
  const sums: Record<string, number> = {};
  for (const s of list) {
    for (const [k, v] of Object.entries(s.timing ?? {})) sums[k] = (sums[k] ?? 0) + v;
  }
  return Object.fromEntries(
    Object.entries(sums).map(([k, v]) => [k, Math.round(v / Math.max(1, list.length))]),
  );
}

/** Readers and /health for `seconds`, with or without the 40 searches in flight. */
async function phase(label: string, withAttack: boolean) {
  const samples = { reads: [] as Sample[], health: [] as Sample[], searches: [] as Sample[] };
  const before = structuredClone({ granted: db.stats.granted, waitMs: db.stats.waitMs });
  const deadline = performance.now() + seconds * 1000;
  const until = () => performance.now() < deadline;
  const attack = withAttack
    ? Array.from({ length: attackers * perAttacker }, async (_, k) => {
      const user = k % attackers;
      let n = k;
      while (until()) {
        n++;
        const next = performance.now() + searchCycleMs;
        await timedCall("search", samples.searches, () =>
          n % 2 || !recallShare
            ? profilesApp.request(
              `/profiles/search?q=${encodeURIComponent(profileQueries[n % profileQueries.length])}`,
              { headers: bearer(user) },
            )
            : recallApp.request("/recall-resolve", {
              method: "POST",
              headers: { ...bearer(user), "content-type": "application/json" },
              body: JSON.stringify({ text: recallText() }),
            }));
        // Each slot starts a search at most every searchCycleMs: a refused search comes back
        // in a millisecond, and retrying at once would measure a CPU flood (admission's
        // business), not the pool.
        await tick(Math.max(0, next - performance.now()));
      }
    })
    : [];
  const read = Array.from({ length: readers }, async (_, r) => {
    let n = r;
    while (until()) {
      const next = performance.now() + readIntervalMs;
      n = (n + 7) % postIds.length;
      await timedCall(
        "read",
        samples.reads,
        () => postsApp.request(`/posts/${postIds[n]}`, { headers: bearer(attackers + r) }),
      );
      await tick(Math.max(0, next - performance.now()));
    }
  });
  const health = (async () => {
    while (until()) {
      const next = performance.now() + healthIntervalMs;
      await timedCall("health", samples.health, () => healthApp.request("/health"));
      await tick(Math.max(0, next - performance.now()));
    }
  })();
  await Promise.all([...attack, ...read, health]);
  const rows = [
    summary(`${label}: GET /posts/:id (${readers} readers)`, samples.reads),
    summary(`${label}: GET /health`, samples.health),
  ];
  if (withAttack) {
    rows.push(
      summary(
        `${label}: searches (${attackers * perAttacker} in flight, ${attackers} users)`,
        samples.searches,
      ),
    );
  }
  const meanWait = (lane: "default" | "search") =>
    Math.round(
      (db.stats.waitMs[lane] - before.waitMs[lane]) /
        Math.max(1, db.stats.granted[lane] - before.granted[lane]) * 10,
    ) / 10;
  console.log(
    `${label}: mean wait for a pool connection: default lane ${meanWait("default")} ms, ` +
      `search lane ${meanWait("search")} ms (granted waits)`,
  );
  const reads = samples.reads.filter((s) => s.status === 200).map((s) => s.ms)
    .sort((a, b) => a - b);
  return {
    rows,
    readP95: reads[Math.floor(0.95 * reads.length)],
    readsOk: samples.reads.every((s) => s.status === 200),
    healthOk: samples.health.every((s) => s.status === 200),
  };
}

// Warm-up: connections, scripts, JWKS, plans.
for (let i = 0; i < 20; i++) {
  await postsApp.request(`/posts/${postIds[i]}`, { headers: bearer(attackers) });
}
const quiet = await phase("quiet", false);
const attacked = await phase("attacked", true);
console.table([...quiet.rows, ...attacked.rows]);
for (const [what, body] of firstBodies) console.log(`first ${what}: ${body.slice(0, 240)}`);
console.log(
  `pool: ${db.gate.size} connections, ${db.gate.laneLimits.search} for searches; ` +
    `abandoned waits ${db.stats.abandonedWaits}, cancelled statements ${db.stats.cancelledStatements}; ` +
    `${seconds} s per phase, ${Deno.build.os}/${Deno.build.arch}, ` +
    `${navigator.hardwareConcurrency} cores, load average ${Deno.loadavg()[0].toFixed(1)}`,
);
const met = attacked.readP95 < 100 && attacked.readsOk && attacked.healthOk;
console.log(
  `goal: readers' p95 (answers 200) < 100 ms under attack → ${
    attacked.readP95 < 100 ? "met" : "MISSED"
  } (${Math.round(attacked.readP95)} ms; ${
    Math.round(quiet.readP95)
  } ms without the attack); every read 200 → ${
    attacked.readsOk ? "yes" : "NO"
  }; /health always 200 → ${attacked.healthOk ? "yes" : "NO"}`,
);
await settleBackground();
await env.close();
Deno.exit(met ? 0 : 1);
