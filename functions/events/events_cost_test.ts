/**
 * What sending events costs in Redis, counted as Upstash bills it (`INFO commandstats` of a
 * Redis of the test's own, HTTP requests counted by the bridge): the per-sender limits are
 * leased (blocks of tokens spent in the isolate), so a steady sender costs well under one
 * command per batch instead of the 4–5 of a check per request, and the limit still holds.
 *
 * @module
 */
import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { countedRedis } from "../../scripts/testing/counted_redis.ts";
import { seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { createApp } from "./app.ts";

Deno.test({
  name: "cost: a steady sender's batches cost ≤ 1 Redis command and ≤ 1 HTTP request each " +
    "(per-request check of the same policy: ~4); the limit holds, 429 past it",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // The whole test in one minute of the limit's window (a minute's start, under a minute ago),
    // so the sliding window's weighting of the last minute can't let a 61st batch through.
    const realNow = Date.now;
    const offset = Math.floor(realNow() / 60_000) * 60_000 + 1000 - realNow();
    Date.now = () => realNow() + offset;
    try {
      await run();
    } finally {
      Date.now = realNow;
    }
  },
});

async function run() {
  await using env = await functionTestEnv();
  await using redis = await countedRedis();
  await seed(env.db.sql, { users: 5, posts: 5, seed: 3, songs: 0 });
  const [a, b] = (await env.db.sql`select id from profiles order by id limit 2`)
    .map((r) => r.id as string);
  // Default limits (60 per user, 30 per anonymous IP a minute). Redis decides every time, even
  // on a saturated CPU: a decision made in the isolate is counted in Redis later, off the books.
  const deps = env.withEnv({ ...redis.env, RATE_LIMIT_DECISION_MS: "2000" });
  const app = createApp(deps);
  const send = async (headers: Record<string, string>) => {
    const res = await app.request("/events", {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify({ events: [{ name: "player.track_started" }] }),
    });
    await res.body?.cancel();
    return res.status;
  };
  const batches = (n: number, headers: Record<string, string>) => async () => {
    for (let i = 0; i < n; i++) assertEquals(await send(headers), 202);
    return n;
  };
  const user = { authorization: `Bearer ${await env.keys.mint(a)}` };
  await send({ authorization: `Bearer ${await env.keys.mint(b)}` }); // the scripts loaded
  const leased = await redis.cost(batches(40, user));
  const anonymous = await redis.cost(batches(25, { "cf-connecting-ip": "203.0.113.9" }));
  // The same policy checked per request, as events did before (same Redis, same counters).
  const perRequest = deps.rateLimiter({
    name: "events",
    windows: [{ limit: 60, windowS: 60 }],
    failOpen: true,
  });
  const before = await redis.cost(async () => {
    for (let i = 0; i < 40; i++) assert((await perRequest.check(`before-${b}`)).success);
    return 40;
  });
  const f = (c: { commands: number; http: number }) =>
    `${c.commands.toFixed(2)} commands, ${c.http.toFixed(2)} HTTP`;
  console.log(
    `[cost] per batch: one user × 40: per request ${f(before)} → leased ${f(leased)}; ` +
      `one anonymous IP × 25 (30/min): leased ${f(anonymous)}`,
  );
  assert(before.commands >= 4, `per request: ${before.commands}`);
  assert(leased.commands <= 1, `${leased.commands} commands per batch`);
  assert(leased.http <= 1, `${leased.http} HTTP requests per batch`);
  assert(anonymous.commands < before.commands, `${anonymous.commands} commands (anonymous)`);

  // Leased, and exact for one sender on one isolate: 60 a minute, then 429.
  const statuses: number[] = [];
  for (let i = 40; i < 61; i++) statuses.push(await send(user));
  assertEquals(statuses.filter((s) => s === 202).length, 20);
  assertEquals(statuses.at(-1), 429);
}
