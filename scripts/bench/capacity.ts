/**
 * `npm run bench:capacity`: issue 12's goal 1 measured with an outside load tool. vegeta (open
 * model: requests start at the offered rate whatever the latency) offers rising rates to the
 * floor (scripts/bench/floor.ts: bare `Deno.serve`, one indexed query, one Upstash GET) and to
 * our cached reads, in one run, on one serving process (`scripts/dev/serve.ts`, as `npm start`
 * runs it) with limits, auth, RLS and caching on:
 *
 * - `feed`: 2,000 distinct users (`CAPACITY_USERS`), `for-you` and `following` in turn, caches
 *   warmed by one round of every user first;
 * - `thread-summary` of 50 threads (warm), and `profiles?ids=` of 100 ids, same users.
 *
 * For each: the highest rate (steps of `CAPACITY_STEP_S`, 4 s) at which every answer was a 200
 * with p95 < 50 ms, that rate as a multiple of the floor's, and the serving process's CPU ms per
 * request (utime + stime from /proc, see costs.ts) at `CAPACITY_COMMON_RATE` (400/s). vegeta
 * runs on the same two cores, as the bench's own generator does: every row pays for it alike.
 *
 * Env: DATABASE_URL, REDIS_URL (as for `npm test`), VEGETA_BIN (or `vegeta` on PATH:
 * `GOTOOLCHAIN=local go install github.com/tsenart/vegeta/v12@v12.13.0`), CAPACITY_CASES (comma
 * list of case names), CAPACITY_MAX (4000).
 *
 * @module
 */
import { seed, seededUserId } from "../testing/seed.ts";
import { freePort } from "../dev/local_services.ts";
import { spawnServer } from "../dev/stack.ts";
import { functionTestEnv } from "../testing/test_env.ts";
import { testRedisUrl } from "../testing/test_redis.ts";
import { cpuMs } from "./costs.ts";
import { definedOnly, runVegeta, vegetaBin } from "./vegeta.ts";

const num = (name: string, fallback: number) => Number(Deno.env.get(name) ?? fallback);
const users = num("CAPACITY_USERS", 2000);
const stepS = num("CAPACITY_STEP_S", 4);
const commonRate = num("CAPACITY_COMMON_RATE", 400);
const maxRate = num("CAPACITY_MAX", 4000);
const only = Deno.env.get("CAPACITY_CASES")?.split(",");
const rates = [200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000, 2200, 2500, 3000, 3500, 4000]
  .filter((r) => r <= maxRate);
const round = (x: number) => Math.round(x * 100) / 100;

const vegeta = vegetaBin();
if (!vegeta) {
  console.error(
    "vegeta not found: GOTOOLCHAIN=local go install github.com/tsenart/vegeta/v12@v12.13.0 (or VEGETA_BIN)",
  );
  Deno.exit(2);
}

const env = await functionTestEnv();
const seeded = await seed(env.db.sql, { users, posts: users * 10 });
console.error(`[capacity] seeded ${JSON.stringify(seeded)}`);
const bridgeToken = crypto.randomUUID();
const bridge = await spawnServer("scripts/dev/redis_bridge.ts", freePort(), {
  UPSTASH_REDIS_REST_TOKEN: bridgeToken,
  REDIS_URL: testRedisUrl(),
}, (l) => l.startsWith("http"));
const redisEnv = { UPSTASH_REDIS_REST_URL: bridge.url, UPSTASH_REDIS_REST_TOKEN: bridgeToken };
const floorPort = freePort();
const floor = await spawnServer("scripts/bench/floor.ts", floorPort, {
  DATABASE_URL: env.env.DATABASE_URL!,
  PORT: String(floorPort),
  ...redisEnv,
}, (l) => l === "ready");
const port = freePort();
const server = await spawnServer("scripts/dev/serve.ts", port, {
  ...definedOnly(env.env),
  LOG_REQUESTS: "false",
  ...redisEnv,
}, (l) => l === "ready");
const base = `http://127.0.0.1:${port}/functions/v1`;
const tokens = await Promise.all(
  Array.from({ length: users }, (_, i) => env.keys.mint(seededUserId(i))),
);
const threads = (await env.db.sql<{ id: string }[]>`
  select id from public.posts order by created_at desc limit 50`)
  .map((r) => r.id);
const profileIds = Array.from({ length: 100 }, (_, i) => seededUserId(i)).join(",");

interface Target {
  method: string;
  url: string;
  header: Record<string, string[]>;
}
const bearer = (i: number) => ({ authorization: [`Bearer ${tokens[i % tokens.length]}`] });
const cases: { name: string; pid: number; targets: Target[] }[] = [
  {
    name: "floor",
    pid: floor.pid,
    targets: [{ method: "GET", url: `http://127.0.0.1:${floorPort}/`, header: {} }],
  },
  {
    name: "feed",
    pid: server.pid,
    targets: tokens.map((_, i) => ({
      method: "GET",
      url: `${base}/feed?limit=20${i % 2 ? "&kind=following" : ""}`,
      header: bearer(i),
    })),
  },
  {
    name: "thread-summary",
    pid: server.pid,
    targets: tokens.map((_, i) => ({
      method: "GET",
      url: `${base}/thread-summary/${threads[i % threads.length]}`,
      header: bearer(i),
    })),
  },
  {
    name: "profiles",
    pid: server.pid,
    targets: tokens.map((_, i) => ({
      method: "GET",
      url: `${base}/profiles?ids=${profileIds}`,
      header: bearer(i),
    })),
  },
].filter((c) => !only || only.includes(c.name));

const rows: Record<string, unknown>[] = [];
try {
  for (const c of cases) {
    const targets = new TextEncoder().encode(
      c.targets.map((t) => JSON.stringify(t) + "\n").join(""),
    );
    // Warm: every target once (caches, token checks, leases), at a rate any case holds.
    await attack(targets, 400, Math.max(1, Math.ceil(c.targets.length / 400)));
    const before = await cpuMs([c.pid]);
    const common = await attack(targets, commonRate, stepS);
    const after = await cpuMs([c.pid]);
    let held = 0;
    let stoppedAt: Attack | undefined;
    for (const rate of rates) {
      const r = await attack(targets, rate, stepS);
      if (r.ok < r.requests || r.p95 >= 50) {
        stoppedAt = r;
        break;
      }
      held = rate;
    }
    const row = {
      case: c.name,
      held_rps: held,
      stopped_at: stoppedAt
        ? `${stoppedAt.rate}/s: p95 ${stoppedAt.p95} ms, ${
          stoppedAt.requests - stoppedAt.ok
        } not 200 ${JSON.stringify(stoppedAt.codes)}`
        : "never",
      common_rate: commonRate,
      common_p50_ms: common.p50,
      common_p95_ms: common.p95,
      common_ok: `${common.ok}/${common.requests}`,
      cpu_ms_per_req: before === null || after === null
        ? null
        : round((after - before) / common.requests),
    };
    console.error(`[capacity] ${JSON.stringify(row)}`);
    rows.push(row);
  }
  const floorRow = rows.find((r) => r.case === "floor");
  const table = [
    `| case | max rate held (every answer 200, p95 < 50 ms) | vs floor | p50 / p95 at ${commonRate}/s | CPU ms / req at ${commonRate}/s | first rate not held |`,
    "| --- | ---: | ---: | --- | ---: | --- |",
    ...rows.map((r) =>
      `| ${r.case} | ${r.held_rps}/s | ${
        floorRow && Number(floorRow.held_rps) > 0
          ? round(Number(r.held_rps) / Number(floorRow.held_rps)) + "×"
          : "—"
      } | ${r.common_p50_ms} / ${r.common_p95_ms} ms | ${r.cpu_ms_per_req} | ${r.stopped_at} |`
    ),
  ].join("\n");
  console.log(
    `vegeta, ${users} users, steps of ${stepS} s, ${new Date().toISOString().slice(0, 10)}, load ${
      Deno.loadavg().map(round).join(" ")
    }\n\n${table}`,
  );
} finally {
  for (const p of [server, floor, bridge]) await p.stop();
  await env.close();
}

interface Attack {
  rate: number;
  requests: number;
  ok: number;
  p50: number;
  p95: number;
  codes: Record<number, number>;
}

/** vegeta at `rate`/s for `seconds` over `targets` (JSON lines, taken round robin). */
async function attack(targets: Uint8Array, rate: number, seconds: number): Promise<Attack> {
  const run = (args: string[], input: Uint8Array) => runVegeta(vegeta!, args, input);
  const results = await run([
    "attack",
    "-format=json",
    `-rate=${rate}/s`,
    `-duration=${seconds}s`,
    "-timeout=10s",
    "-max-workers=4096",
    "-keepalive=true",
  ], targets);
  const report = JSON.parse(
    new TextDecoder().decode(await run(["report", "-type=json"], results)),
  ) as {
    requests: number;
    latencies: { "50th": number; "95th": number };
    status_codes: Record<string, number>;
  };
  const codes = Object.fromEntries(
    Object.entries(report.status_codes).map(([k, v]) => [Number(k), v]),
  );
  return {
    rate,
    requests: report.requests,
    ok: codes[200] ?? 0,
    p50: round(report.latencies["50th"] / 1e6),
    p95: round(report.latencies["95th"] / 1e6),
    codes,
  };
}
