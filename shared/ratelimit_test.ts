import "../scripts/unit_env.ts";
import { Hono } from "hono";
import { Redis } from "@upstash/redis";
import { assert, assertEquals, assertMatch } from "../scripts/assert.ts";
import { freePort, startRedisServer } from "../scripts/local_services.ts";
import { startRedisBridge } from "../scripts/redis_bridge.ts";
import { testRedis } from "../scripts/test_redis.ts";
import { ProblemError, problemResponse } from "./problem.ts";
import { rateLimit, RateLimiter, type RateLimitPolicy, slidingWindowRetryAt } from "./ratelimit.ts";

const redisFixture = await testRedis();
const realNow = Date.now;
const W = 60_000;
/** A moment at the start of a window, far from real time so keys never collide. */
const epoch = Math.floor(realNow() / W) * W + 1000 * W;
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
    new RateLimiter(policy, { redis: null, clock: () => Date.now() }),
};

for (const [store, make] of Object.entries(stores)) {
  const it = (name: string, fn: () => Promise<void>) =>
    Deno.test({
      name: `${store}: ${name}`,
      fn: () => withClock(fn),
      sanitizeOps: false,
      sanitizeResources: false,
    });
  const policy = (name: string, windows: [number, number][]): RateLimitPolicy => ({
    name: `${name}-${crypto.randomUUID().slice(0, 6)}`,
    windows: windows.map(([limit, windowS]) => ({ limit, windowS })),
    failOpen: false,
    decisionMs: 1000,
  });

  it("allows the limit, refuses the next, and says exactly when one will pass", async () => {
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

  it("identifiers are independent", async () => {
    now = epoch + 5 * W;
    const limiter = make(policy("ids", [[2, 60]]));
    assert((await limiter.check("a")).success);
    assert((await limiter.check("a")).success);
    assert(!(await limiter.check("a")).success);
    assert((await limiter.check("b")).success);
  });

  it("several windows: the tighter trips, and the refused request is refunded", async () => {
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

Deno.test({
  name:
    "redis: a warm multi-window check is one HTTP request; a known-exhausted identifier costs none",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
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
});

/** A tiny app behind the middleware, as a function would use it. */
function appWith(limiter: RateLimiter) {
  const app = new Hono();
  app.onError((err, c) => problemResponse(c, err as ProblemError));
  app.get("/", rateLimit(limiter, () => "user-1"), (c) => c.text("ok"));
  return app;
}

Deno.test({
  name: "429 problem+json with Retry-After and draft-11 headers; allowed answers carry RateLimit",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
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
});

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

Deno.test({
  name: "teardown",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => redisFixture.close(),
});
