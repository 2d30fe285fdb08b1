import { Hono } from "hono";
import { Redis } from "@upstash/redis";
import { assert, assertEquals, assertMatch } from "../../scripts/testing/assert.ts";
import { freePort, startRedisServer } from "../../scripts/dev/local_services.ts";
import { startRedisBridge } from "../../scripts/dev/redis_bridge.ts";
import { saturate } from "../../scripts/testing/test_cpu.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { type TestRedis, testRedis } from "../../scripts/testing/test_redis.ts";
import { ProblemError, problemResponse } from "../http/problem.ts";
import { rateLimit, RateLimiter, type RateLimitPolicy } from "./ratelimit.ts";
import { slidingWindowRetryAt } from "./ratelimit_store.ts";

/** The Redis of the cases below (bridge + key prefix), made by the suite's setup. */
let redisFixture: TestRedis;
const it = suite("ratelimit", async () => redisFixture = await testRedis());
const realNow = Date.now;
const W = 60_000;
/**
 * A moment at the start of an hour (so of a minute too), far from real time so keys never
 * collide. Hour-aligned: the two-window test spans 12 minutes of an hour window, and a start
 * aligned only to the minute let it cross an hour boundary at some times of day.
 */
const H = 3_600_000;
const epoch = Math.floor(realNow() / H) * H + 1000 * H;
let now = epoch;

/** Runs `fn` with Date.now pinned to the test clock (Upstash's limiter reads Date.now). */
async function withClock(fn: () => Promise<void>) {
  Date.now = () => now;
  try {
    await fn();
  } finally {
    Date.now = realNow;
  }
}

const stores = {
  redis: (policy: RateLimitPolicy) =>
    new RateLimiter(policy, { redis: redisFixture.redis, prefix: `${redisFixture.prefix}rl:` }),
  memory: (policy: RateLimitPolicy) =>
    new RateLimiter(policy, { redis: null, prefix: "rl:", clock: () => Date.now() }),
};

for (const [store, make] of Object.entries(stores)) {
  const test = (name: string, fn: () => Promise<void>) =>
    it(`${store}: ${name}`, () => withClock(fn));
  const policy = (name: string, windows: [number, number][]): RateLimitPolicy => ({
    name: `${name}-${crypto.randomUUID().slice(0, 6)}`,
    windows: windows.map(([limit, windowS]) => ({ limit, windowS })),
    failOpen: false,
    decisionMs: 1000,
  });

  test("allows the limit, refuses the next, and says exactly when one will pass", async () => {
    now = epoch;
    const limiter = make(policy("basic", [[10, 60]]));
    for (let i = 0; i < 10; i++) assert((await limiter.check("u")).success, `request ${i}`);
    const refused = await limiter.check("u");
    assertEquals(refused.success, false);
    // All 10 in this window: the next passes as soon as the window turns (weighted 9.99… → 9).
    assertEquals(refused.retryAt, epoch + W + 1);

    now = epoch + W + W / 2; // half way through the next window: floor(0.5 × 10) = 5 weigh in
    for (let i = 0; i < 5; i++) assert((await limiter.check("u")).success, `second window ${i}`);
    const again = await limiter.check("u");
    assertEquals(again.success, false);
    const expected = slidingWindowRetryAt({
      limit: 10,
      windowMs: W,
      now,
      current: 5,
      previous: 10,
    });
    assertEquals(again.retryAt, expected);
    assert(expected < epoch + 2 * W, "must be sooner than the next window start");
    now = expected - 1;
    assertEquals((await make(policy("fresh", [[10, 60]])).check("other")).success, true);
  });

  test("identifiers are independent", async () => {
    now = epoch + 5 * W;
    const limiter = make(policy("ids", [[2, 60]]));
    assert((await limiter.check("a")).success);
    assert((await limiter.check("a")).success);
    assert(!(await limiter.check("a")).success);
    assert((await limiter.check("b")).success);
  });

  test("several windows: the tighter trips, and the refused request is refunded", async () => {
    now = epoch + 10 * W;
    const limiter = make(policy("multi", [[2, 60], [3, 3600]]));
    assert((await limiter.check("u")).success);
    assert((await limiter.check("u")).success);
    const minute = await limiter.check("u");
    assertEquals(minute.success, false);
    assertEquals(minute.windows.map((w) => w.success), [false, true]);
    now += 2 * W; // minute window clear; hour window has 2 (the refused one was refunded)
    assert((await limiter.check("u")).success);
    const hour = await limiter.check("u");
    assertEquals(hour.windows.map((w) => w.success), [true, false]);
    assert(hour.retryAt > now + W, "the hour window decides");
  });
}

it(
  "redis: a warm multi-window check is one HTTP request; a known-exhausted identifier costs none",
  () =>
    withClock(async () => {
      now = epoch + 20 * W;
      const limiter = stores.redis({
        name: "rt",
        windows: [{ limit: 3, windowS: 60 }, { limit: 100, windowS: 3600 }],
        failOpen: false,
        decisionMs: 1000,
      });
      await limiter.check("u"); // loads the script
      const before = redisFixture.bridge.stats.requests;
      assert((await limiter.check("u")).success);
      assertEquals(redisFixture.bridge.stats.requests - before, 1);
      await limiter.check("u");
      assertEquals((await limiter.check("u")).success, false);
      const blocked = redisFixture.bridge.stats.requests;
      assertEquals((await limiter.check("u")).success, false);
      assertEquals(redisFixture.bridge.stats.requests - blocked, 0);
    }),
);

/** A tiny app behind the middleware, as a function would use it. */
function appWith(limiter: RateLimiter) {
  const app = new Hono();
  app.onError((err, c) => problemResponse(c, err as ProblemError));
  app.get("/", rateLimit(limiter, () => "user-1"), (c) => c.text("ok"));
  return app;
}

it(
  "429 problem+json with Retry-After and draft-11 headers; allowed answers carry RateLimit",
  async () => {
    const limiter = new RateLimiter({
      name: "posts",
      windows: [{ limit: 1, windowS: 60 }],
      failOpen: false,
    }, {
      redis: redisFixture.redis,
      prefix: `${redisFixture.prefix}rl2:`,
    });
    const app = appWith(limiter);
    const ok = await app.request("/");
    assertEquals(ok.status, 200);
    assertEquals(ok.headers.get("ratelimit-policy"), `"posts";q=1;w=60`);
    assertMatch(ok.headers.get("ratelimit") ?? "", /^"posts";r=0;t=\d+$/);
    const limited = await app.request("/");
    assertEquals(limited.status, 429);
    assertEquals(limited.headers.get("content-type"), "application/problem+json");
    const retryAfter = Number(limited.headers.get("retry-after"));
    assert(retryAfter >= 1 && retryAfter <= 61, `retry-after ${retryAfter}`);
    const body = await limited.json();
    assertEquals(body.policy, "posts");
    assertMatch(body.detail, /"posts" exceeded: 1 per 60 s/);
  },
);

Deno.test({
  name: "Redis gone: fail-open lets through, fail-closed answers 503, both within ~50 ms",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const server = await startRedisServer(freePort());
    const bridge = await startRedisBridge({ redisUrl: server.url, token: "t", port: 0 });
    const redis = new Redis({
      url: bridge.url,
      token: "t",
      retry: { retries: 1, backoff: () => 20 },
      enableTelemetry: false,
    });
    const make = (failOpen: boolean) =>
      new RateLimiter({
        name: failOpen ? "reads" : "llm",
        windows: [{ limit: 5, windowS: 60 }],
        failOpen,
      }, {
        redis,
        prefix: "rl:",
      });
    const open = make(true);
    const closed = make(false);
    assert((await open.check("u")).success, "works while Redis is up");
    await server.stop();
    for (const [limiter, expected] of [[open, true], [closed, false]] as const) {
      const start = performance.now();
      const d = await limiter.check("u");
      const ms = performance.now() - start;
      assertEquals(d.success, expected);
      assertEquals(d.degraded, true);
      assert(ms < 250, `decision took ${ms.toFixed(0)} ms`);
    }
    const res = await appWith(closed).request("/");
    assertEquals(res.status, 503);
    assert(Number(res.headers.get("retry-after")) >= 1);
    // The bridge itself gone (connection refused) is just as quick.
    await bridge.close();
    const start = performance.now();
    assertEquals((await open.check("u")).success, true);
    assert(performance.now() - start < 250);
  },
});

// ---------------------------------------------------------------------------------------------
// Degraded mode: Redis slow, Redis gone, the event loop busy
// ---------------------------------------------------------------------------------------------

/**
 * Runs `fn` with Date.now pinned in the middle of a minute: these tests read and write the
 * current minute's counts, and on the real clock their window could turn halfway.
 */
const midMinute = (fn: () => Promise<void>) => () =>
  withClock(() => {
    now = epoch + 40 * W + W / 2;
    return fn();
  });

/** A fail-open policy with a unique name, limit 5 per minute, 50 ms to decide. */
function openPolicy(limit = 5): RateLimitPolicy {
  return {
    name: `deg-${crypto.randomUUID().slice(0, 6)}`,
    windows: [{ limit, windowS: 60 }],
    failOpen: true,
    decisionMs: 50,
  };
}

/** The Redis count of `identifier` in the current minute bucket of `policy`, read raw. */
async function redisCount(
  redis: Redis,
  prefix: string,
  policy: RateLimitPolicy,
  identifier: string,
): Promise<number> {
  const w = Math.floor(Date.now() / 60_000);
  return Number(await redis.get(`${prefix}${policy.name}:60:${identifier}:${w}`) ?? 0);
}

it(
  "degraded: Redis slowed past the window, the isolate admits exactly the limit; " +
    "late answers leave Redis counting what was admitted",
  midMinute(async () => {
    const policy = openPolicy(5);
    const prefix = `${redisFixture.prefix}deg1:`;
    const limiter = new RateLimiter(policy, { redis: redisFixture.redis, prefix });
    redisFixture.bridge.delayMs = 600;
    let decisions;
    try {
      decisions = await Promise.all(Array.from({ length: 30 }, () => limiter.check("u")));
    } finally {
      redisFixture.bridge.delayMs = 0;
    }
    assertEquals(decisions.filter((d) => d.success).length, 5);
    assert(decisions.every((d) => d.degraded), "every decision was the isolate's");
    const refused = decisions.find((d) => !d.success)!;
    assertEquals(refused.windows[0].remaining, 0);
    assert(refused.retryAt > Date.now(), "a refusal says when to come back");
    await limiter.idle();
    assertEquals(await redisCount(redisFixture.redis, prefix, policy, "u"), 5);
    // Redis is back to normal and knows: the next request is refused by Redis itself.
    const next = await limiter.check("u");
    assertEquals([next.success, next.degraded], [false, false]);
    // A second isolate (no local history) is refused by Redis too.
    const other = new RateLimiter(policy, { redis: redisFixture.redis, prefix });
    assertEquals((await other.check("u")).success, false);
  }),
);

it(
  "degraded: a fail-closed policy stays closed when Redis is slow, and Redis is refunded",
  midMinute(async () => {
    const policy = { ...openPolicy(5), failOpen: false };
    const prefix = `${redisFixture.prefix}deg2:`;
    const limiter = new RateLimiter(policy, { redis: redisFixture.redis, prefix });
    redisFixture.bridge.delayMs = 600;
    let decisions;
    try {
      decisions = await Promise.all(Array.from({ length: 3 }, () => limiter.check("u")));
    } finally {
      redisFixture.bridge.delayMs = 0;
    }
    assert(decisions.every((d) => !d.success && d.degraded && d.windows.length === 0));
    const res = await appWith(limiter).request("/"); // as "user-1"
    assertEquals(res.status, 200); // Redis answers in time again
    await limiter.idle();
    assertEquals(await redisCount(redisFixture.redis, prefix, policy, "u"), 0);
    assertEquals(await redisCount(redisFixture.redis, prefix, policy, "user-1"), 1);
  }),
);

Deno.test({
  name: "degraded: Redis killed, the isolate admits the limit and answers 429 with headers; " +
    "Redis counts those requests once it is back",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: midMinute(async () => {
    const port = freePort();
    let server = await startRedisServer(port);
    const bridge = await startRedisBridge({ redisUrl: server.url, token: "t", port: 0 });
    const redis = new Redis({
      url: bridge.url,
      token: "t",
      retry: { retries: 1, backoff: () => 20 },
      enableAutoPipelining: true,
      enableTelemetry: false,
    });
    try {
      const policy = openPolicy(5);
      const limiter = new RateLimiter(policy, { redis, prefix: "rl:" });
      assert((await limiter.check("user-1")).success, "works while Redis is up");
      await limiter.idle();
      await server.stop(); // killed
      const decisions = await Promise.all(
        Array.from({ length: 20 }, () => limiter.check("user-1")),
      );
      assertEquals(decisions.filter((d) => d.success).length, 4, "5 in all, 1 counted by Redis");
      assert(decisions.every((d) => d.degraded));
      await limiter.idle();
      assertEquals(limiter.pending, 4);
      const res = await appWith(limiter).request("/");
      assertEquals(res.status, 429);
      assert(Number(res.headers.get("retry-after")) >= 1);
      assertEquals(res.headers.get("ratelimit-policy"), `"${policy.name}";q=5;w=60`);
      assertMatch(res.headers.get("ratelimit") ?? "", new RegExp(`^"${policy.name}";r=0;t=\\d+$`));

      server = await startRedisServer(port);
      // The bridge reconnects within ~1 s; until then the isolate keeps refusing.
      const deadline = performance.now() + 10_000;
      let d = await limiter.check("user-1");
      while (d.degraded && performance.now() < deadline) {
        assertEquals(d.success, false);
        await new Promise((r) => setTimeout(r, 100)); // polling a reconnect, bounded
        d = await limiter.check("user-1");
      }
      assertEquals([d.success, d.degraded], [false, false], "Redis decides again, and refuses");
      await limiter.idle();
      assertEquals(limiter.pending, 0);
      // The first request was lost with the old server; the 4 admitted while it was gone are in.
      assertEquals(await redisCount(redis, "rl:", policy, "user-1"), 4);
    } finally {
      await server.stop();
      await bridge.close();
    }
  }),
});

it(
  "Redis that forgot (a lost key) cannot lift the isolate past the limit",
  midMinute(async () => {
    const policy = openPolicy(3);
    const prefix = `${redisFixture.prefix}deg4:`;
    const limiter = new RateLimiter(policy, { redis: redisFixture.redis, prefix });
    for (let i = 0; i < 3; i++) assert((await limiter.check("u")).success);
    const w = Math.floor(Date.now() / 60_000);
    await redisFixture.redis.del(`${prefix}${policy.name}:60:u:${w}`);
    const d = await limiter.check("u");
    assertEquals([d.success, d.degraded], [false, false]);
    await limiter.idle();
    assertEquals(await redisCount(redisFixture.redis, prefix, policy, "u"), 0, "refunded");
  }),
);

it(
  "CPU saturated, Redis healthy: Redis still decides and never more than the limit passes",
  midMinute(async () => {
    const policy = openPolicy(20);
    const prefix = `${redisFixture.prefix}deg5:`;
    const limiter = new RateLimiter(policy, { redis: redisFixture.redis, prefix });
    await limiter.check("warm"); // loads the script
    const stop = new AbortController();
    const load = saturate(60, stop.signal);
    let decisions;
    try {
      decisions = await Promise.all(Array.from({ length: 100 }, () => limiter.check("u")));
    } finally {
      stop.abort();
      await load;
    }
    const admitted = decisions.filter((d) => d.success).length;
    const local = decisions.filter((d) => d.degraded).length;
    console.log(`[cpu saturated] admitted ${admitted} of 100; ${100 - local} decided by Redis`);
    assertEquals(admitted, 20);
    // Most, not all: on a loaded box some round trips miss even the stretched window.
    assert(local < 50, `${local} of 100 decided in the isolate with Redis healthy`);
    await limiter.idle();
    assertEquals(await redisCount(redisFixture.redis, prefix, policy, "u"), 20);
  }),
);
