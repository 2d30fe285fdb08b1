/**
 * Leased rate limits (ratelimit_lease.ts) against real Redis through the bridge: exact for one
 * user on one isolate (decision by decision against a check per request, across window
 * boundaries), never over the limit across isolates, ≤ 1 Redis command per request (`INFO
 * commandstats`, a script's inner commands included), and the degraded mode.
 *
 * @module
 */
import { Hono } from "hono";
import { Redis } from "@upstash/redis";
import { Redis as IORedis } from "ioredis";
import { assert, assertEquals, assertMatch } from "../../scripts/testing/assert.ts";
import { freePort, startRedisServer } from "../../scripts/dev/local_services.ts";
import { startRedisBridge } from "../../scripts/dev/redis_bridge.ts";
import { functionApps } from "../../scripts/dev/gateway.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { type TestRedis, testRedis } from "../../scripts/testing/test_redis.ts";
import { ProblemError, problemResponse } from "../http/problem.ts";
import type { Deps } from "../deps.ts";
import { metrics } from "../http/metrics.ts";
import {
  rateLimit,
  type RateLimitDecision,
  RateLimiter,
  type RateLimitPolicy,
} from "./ratelimit.ts";
import { maxBlock, TokenLeases } from "./ratelimit_lease.ts";
import { MemoryWindowStore } from "./ratelimit_store.ts";

let redisFixture: TestRedis;
const it = suite("ratelimit leases", async () => redisFixture = await testRedis());

const realNow = Date.now;
const W = 60_000;
const H = 3_600_000;
/** The start of an hour far from real time, so keys never collide with other runs. */
const epoch = Math.floor(realNow() / H) * H + 2000 * H;
let now = epoch;

/** Runs `fn` with Date.now pinned to the test clock (the limiter's default clock reads it). */
async function withClock(fn: () => Promise<void>) {
  Date.now = () => now;
  try {
    await fn();
  } finally {
    Date.now = realNow;
  }
}
const clocked = (fn: () => Promise<void>) => () => withClock(fn);

/** A leased, fail-open policy with a unique name. */
function leased(limit: number, windowS = 60, decisionMs = 1000): RateLimitPolicy {
  return {
    name: `lease-${crypto.randomUUID().slice(0, 6)}`,
    windows: [{ limit, windowS }],
    failOpen: true,
    leased: true,
    decisionMs,
  };
}

/** An isolate's limiter of `policy` on the fixture's Redis (same prefix: same counts). */
function isolate(policy: RateLimitPolicy, prefix = "lrl:"): RateLimiter {
  return new RateLimiter(policy, {
    redis: redisFixture.redis,
    prefix: `${redisFixture.prefix}${prefix}`,
  });
}

/** A small deterministic PRNG (mulberry32), so a failing schedule can be replayed. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const admitted = (ds: RateLimitDecision[]) => ds.filter((d) => d.success).length;

it(
  "one user, one isolate: exactly the limit of limit + k, sequential and concurrent",
  clocked(async () => {
    now = epoch + W / 4;
    const limiter = isolate(leased(120));
    const decisions: RateLimitDecision[] = [];
    for (let i = 0; i < 130; i++) decisions.push(await limiter.check("seq"));
    assertEquals(admitted(decisions), 120);
    assert(decisions.slice(0, 120).every((d) => d.success), "the first 120 pass");
    assert(decisions.every((d) => !d.degraded));
    // All 120 in this window: the next passes once the window turns (weighted 119.99… → 119).
    assertEquals(decisions[129].retryAt, epoch + W + 1);

    const concurrent = await Promise.all(
      Array.from({ length: 300 }, () => limiter.check("burst")),
    );
    assertEquals(admitted(concurrent), 120);
    assert(concurrent.every((d) => !d.degraded));
  }),
);

it(
  "one user, one isolate, a clock moved by hand across 8 windows: every decision is the " +
    "per-request check's (admitted count, Retry-After), and RateLimit never promises more",
  clocked(async () => {
    const limit = 80; // blocks of at most 10
    const policy = leased(limit);
    now = epoch + 3 * H;
    const limiter = isolate(policy);
    const reference = new MemoryWindowStore({ limit, windowS: 60 }, () => now);
    const rnd = random(7);
    const start = now;
    let bursts = 0, passed = 0, refused = 0;
    // Light minutes (~40 requests: blocks end half-spent) and heavy ones (~110: refusals, and
    // the previous minute weighing in), in both orders.
    for (const heavy of [false, true, true, false, false, true, false, true]) {
      const end = start + (Math.floor((now - start) / W) + 1) * W;
      while (now < end) {
        const n = 1 + Math.floor(rnd() * (heavy ? 8 : 3));
        const got = await Promise.all(Array.from({ length: n }, () => limiter.check("u")));
        const want = [];
        for (let i = 0; i < n; i++) want.push(await reference.limit("u"));
        const at = `at +${now - epoch - 3 * H} ms`;
        assert(got.every((d) => !d.degraded), `${at}: Redis decided (it is healthy)`);
        assertEquals(admitted(got), want.filter((d) => d.success).length, at);
        const lastOk = want.filter((d) => d.success).at(-1);
        for (const d of got) {
          if (d.success) {
            assert(lastOk && d.windows[0].remaining <= want[0].remaining, `${at}: over-promised`);
          } else {
            const r = want.find((x) => !x.success)!;
            assertEquals(d.retryAt, r.retryAt, `${at}: retry time`);
          }
        }
        passed += admitted(got);
        refused += n - admitted(got);
        bursts++;
        now += Math.floor(rnd() * (heavy ? 5000 : 6000));
      }
    }
    console.log(`[lease exactness] ${bursts} bursts, ${passed} admitted, ${refused} refused`);
    assert(refused > 50 && passed > 5 * limit, "the schedule exercised both sides");
  }),
);

it(
  "two windows (80/min and 300/h), across minute and hour boundaries: every decision is the " +
    "per-request check's (the memory limiter, all windows or none)",
  clocked(async () => {
    const policy: RateLimitPolicy = {
      ...leased(80),
      windows: [{ limit: 80, windowS: 60 }, { limit: 300, windowS: 3600 }],
    };
    const limiter = isolate(policy);
    const reference = new RateLimiter(policy, { redis: null, prefix: "", clock: () => now });
    const rnd = random(23);
    let passed = 0;
    const refused = [0, 0]; // by the minute, by the hour
    // Minutes 0-5 of an hour, then 57-2 of another: the hour turns in the second run.
    for (const from of [epoch + 13 * H, epoch + 16 * H - 3 * W]) {
      now = from;
      for (const heavy of [false, true, false, true, true, false]) {
        const end = from + (Math.floor((now - from) / W) + 1) * W;
        while (now < end) {
          const n = 1 + Math.floor(rnd() * (heavy ? 8 : 3));
          const got = await Promise.all(Array.from({ length: n }, () => limiter.check("u")));
          const want = [];
          for (let i = 0; i < n; i++) want.push(await reference.check("u"));
          const at = `at ${new Date(now).toISOString()}`;
          assert(got.every((d) => !d.degraded), `${at}: Redis decided`);
          assertEquals(admitted(got), admitted(want), at);
          const r = want.find((x) => !x.success);
          for (const d of got.filter((d) => !d.success)) {
            assertEquals(d.retryAt, r!.retryAt, `${at}: retry`);
            d.windows.forEach((w, i) => !w.success && refused[i]++);
          }
          passed += admitted(got);
          now += Math.floor(rnd() * (heavy ? 5000 : 6000));
        }
      }
    }
    console.log(`[lease exactness, 2 windows] ${passed} admitted, refused ${refused}`);
    assert(passed > 400 && refused.every((n) => n > 20), "each window refused some");
  }),
);

it(
  "two isolates on one Redis, concurrent, across window boundaries: never more than the " +
    "sliding window allows, counted against what was really admitted",
  clocked(async () => {
    const limit = 40;
    const policy = leased(limit);
    now = epoch + 4 * H;
    const isolates = [isolate(policy, "two:"), isolate(policy, "two:")];
    const rnd = random(11);
    /** Admissions per minute bucket, as they happened. */
    const real = new Map<number, number>();
    const end = now + 6 * W;
    let total = 0;
    while (now < end) {
      const n = 1 + Math.floor(rnd() * 12);
      const got = await Promise.all(
        Array.from({ length: n }, () => isolates[rnd() < 0.5 ? 0 : 1].check("u")),
      );
      assert(got.every((d) => !d.degraded), "Redis decided (it is healthy)");
      const b = Math.floor(now / W);
      real.set(b, (real.get(b) ?? 0) + admitted(got));
      total += admitted(got);
      const weighted = Math.floor((1 - (now % W) / W) * (real.get(b - 1) ?? 0));
      assert(
        weighted + real.get(b)! <= limit,
        `over the limit at +${now - epoch - 4 * H} ms: ${weighted} + ${real.get(b)}`,
      );
      now += Math.floor(rnd() * 3000);
    }
    // 6 windows of heavy traffic: the two isolates together got most of the 240.
    console.log(`[two isolates] admitted ${total} over 6 windows of limit ${limit}`);
    assert(total > 3 * limit, `only ${total} admitted`);

    // One window, all at once: 400 concurrent requests over both isolates.
    now = epoch + 5 * H;
    const burst = await Promise.all(
      Array.from({ length: 400 }, (_, i) => isolates[i % 2].check("flood")),
    );
    assert(admitted(burst) <= limit, `${admitted(burst)} admitted`);
    assert(admitted(burst) >= limit - 2 * maxBlock(policy.windows), `${admitted(burst)} admitted`);
  }),
);

it(
  "a block ends with its window half-spent: another isolate counts its unspent tokens as used " +
    "(less, never more), the isolate holding them does not, and together they get exactly " +
    "what a check per request allows",
  clocked(async () => {
    const policy = leased(80); // blocks of at most 10
    now = epoch + 6 * H + W - 1000;
    const a = isolate(policy, "ends:");
    const b = isolate(policy, "ends:");
    for (let i = 0; i < 20; i++) assert((await a.check("u")).success); // blocks 1, 2, 4, 8, 10
    now += 1000; // the next window: A leased 25 in the last one and spent 20
    const drain = async (l: RateLimiter) => {
      let n = 0;
      for (let d = await l.check("u"); d.success; d = await l.check("u")) {
        assert(!d.degraded);
        n++;
      }
      return n;
    };
    const byB = await drain(b);
    assertEquals(byB, 80 - 25, "B: the 5 tokens A holds unspent count as used");
    const byA = await drain(a);
    assertEquals(byA, 5, "A: its own unspent tokens don't count against it");
    const reference = new MemoryWindowStore(policy.windows[0], () => now);
    now -= 1000;
    for (let i = 0; i < 20; i++) await reference.limit("u");
    now += 1000;
    let perRequest = 0;
    while ((await reference.limit("u")).success) perRequest++;
    assertEquals(byA + byB, perRequest);
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
  "headers: RateLimit from the block's view, decreasing, 0 at the limit; 429 with Retry-After",
  clocked(async () => {
    now = epoch + 7 * H + W / 2;
    const policy = leased(10);
    const app = appWith(isolate(policy));
    const remaining: number[] = [];
    for (let i = 0; i < 10; i++) {
      const res = await app.request("/");
      assertEquals(res.status, 200);
      assertEquals(res.headers.get("ratelimit-policy"), `"${policy.name}";q=10;w=60`);
      const m = (res.headers.get("ratelimit") ?? "").match(/^"[^"]+";r=(\d+);t=(\d+)$/);
      assert(m, res.headers.get("ratelimit") ?? "no RateLimit");
      assertEquals(Number(m[2]), 30);
      remaining.push(Number(m[1]));
    }
    assertEquals(remaining, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    const limited = await app.request("/");
    assertEquals(limited.status, 429);
    assertEquals(limited.headers.get("retry-after"), "31");
    assertMatch(limited.headers.get("ratelimit") ?? "", /;r=0;t=30$/);
    assertMatch((await limited.json()).detail, /exceeded: 10 per 60 s/);
  }),
);

it(
  "a known-exhausted identifier costs no round trip; a warm block costs none either",
  clocked(async () => {
    now = epoch + 8 * H;
    const limiter = isolate(leased(16)); // blocks of at most 2
    await limiter.check("u"); // the script loaded, 1 token
    const before = redisFixture.bridge.stats.requests;
    for (let i = 0; i < 15; i++) assert((await limiter.check("u")).success);
    const trips = redisFixture.bridge.stats.requests - before;
    assert(trips <= 8, `${trips} round trips for 15 requests in blocks of 2`);
    const blocked = redisFixture.bridge.stats.requests;
    for (let i = 0; i < 5; i++) assertEquals((await limiter.check("u")).success, false);
    assertEquals(redisFixture.bridge.stats.requests - blocked, 1, "one refusal, then cached");
  }),
);

it(
  "the isolate holds at most maxIdentifiers identifiers; one forgotten leases again",
  clocked(async () => {
    now = epoch + 15 * H;
    const window = { limit: 80, windowS: 60 };
    const leases = new TokenLeases({
      redis: redisFixture.redis,
      prefixes: [`${redisFixture.prefix}sweep`],
      windows: [window],
      clock: () => now,
      maxIdentifiers: 10,
      unpaid: () => {},
    });
    for (let i = 0; i < 30; i++) {
      const id = `id-${i}`;
      for (let k = 0; k < 4; k++) { // blocks of 1, 2 and 4: 3 left
        if (leases.take(id, now)) continue;
        await leases.acquire(id, now).lease.done;
        assert(leases.take(id, now), `${id}: a token after the lease`);
      }
      assert(leases.size <= 10, `${leases.size} identifiers held`);
    }
    assertEquals(leases.left("id-29"), 3);
    assertEquals(leases.left("id-0"), 0, "forgotten (its token stays counted in Redis)");
    assertEquals(leases.take("id-0", now), null);
  }),
);

it("a leased policy must fail open", () => {
  let err: unknown;
  try {
    isolate({ ...leased(5), failOpen: false });
  } catch (e) {
    err = e;
  }
  assert(err instanceof RangeError, String(err));
});

it(
  "Redis that forgot (a lost key) cannot lift the isolate past the limit",
  clocked(async () => {
    now = epoch + 9 * H + W / 2;
    const policy = leased(24); // blocks of at most 3
    const limiter = isolate(policy, "forgot:");
    for (let i = 0; i < 24; i++) assert((await limiter.check("u")).success);
    const w = Math.floor(now / W);
    await redisFixture.redis.del(`${redisFixture.prefix}forgot:${policy.name}:60:u:${w}`);
    const d = await limiter.check("u");
    assertEquals([d.success, d.degraded], [false, false]);
  }),
);

// ---------------------------------------------------------------------------------------------
// Degraded mode
// ---------------------------------------------------------------------------------------------

/** The Redis count of `identifier` in the current minute bucket of `policy`, read raw. */
async function redisCount(redis: Redis, prefix: string, policy: RateLimitPolicy, id: string) {
  const w = Math.floor(Date.now() / W);
  return Number(await redis.get(`${prefix}${policy.name}:60:${id}:${w}`) ?? 0);
}

it(
  "degraded: Redis slowed past the window, the isolate admits exactly the limit; the late " +
    "grant pays for what it can and Redis counts the rest; then Redis refuses, also elsewhere",
  clocked(async () => {
    now = epoch + 10 * H + W / 2;
    const policy = leased(5, 60, 50);
    const prefix = `${redisFixture.prefix}deg:`;
    const limiter = new RateLimiter(policy, { redis: redisFixture.redis, prefix });
    await limiter.check("warm"); // loads the script
    const localBefore = metrics.value("rate_limit_store_failures_total", {
      policy: policy.name,
      decision: "local",
    });
    redisFixture.bridge.delayMs = 600;
    let decisions;
    try {
      decisions = await Promise.all(Array.from({ length: 30 }, () => limiter.check("u")));
    } finally {
      redisFixture.bridge.delayMs = 0;
    }
    assertEquals(admitted(decisions), 5);
    assert(decisions.every((d) => d.degraded), "every decision was the isolate's");
    assertEquals(
      metrics.value("rate_limit_store_failures_total", { policy: policy.name, decision: "local" }) -
        localBefore,
      30,
    );
    const refused = decisions.find((d) => !d.success)!;
    assertEquals(refused.windows[0].remaining, 0);
    assert(refused.retryAt > Date.now(), "a refusal says when to come back");
    await limiter.idle();
    assertEquals(await redisCount(redisFixture.redis, prefix, policy, "u"), 5);
    const next = await limiter.check("u");
    assertEquals([next.success, next.degraded], [false, false]);
    const other = new RateLimiter(policy, { redis: redisFixture.redis, prefix });
    assertEquals((await other.check("u")).success, false);
  }),
);

Deno.test({
  name: "leases, Redis killed: the isolate admits the limit, 429s with headers; Redis counts " +
    "those requests once it is back, and decides again",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: clocked(async () => {
    now = epoch + 11 * H + W / 2;
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
      const policy = leased(8, 60, 50); // blocks of 1
      const limiter = new RateLimiter(policy, { redis, prefix: "rl:" });
      assert((await limiter.check("user-1")).success, "works while Redis is up");
      await server.stop();
      const decisions = await Promise.all(
        Array.from({ length: 20 }, () => limiter.check("user-1")),
      );
      assertEquals(admitted(decisions), 7, "8 in all, 1 counted by Redis");
      assert(decisions.every((d) => d.degraded));
      await limiter.idle();
      assertEquals(limiter.pending, 7);
      const res = await appWith(limiter).request("/");
      assertEquals(res.status, 429);
      assert(Number(res.headers.get("retry-after")) >= 1);
      assertMatch(res.headers.get("ratelimit") ?? "", new RegExp(`^"${policy.name}";r=0;t=\\d+$`));

      server = await startRedisServer(port);
      const deadline = performance.now() + 10_000;
      let d = await limiter.check("user-1");
      while (d.degraded && performance.now() < deadline) {
        assertEquals(d.success, false);
        await new Promise((r) => setTimeout(r, 100)); // polling a reconnect, bounded
        d = await limiter.check("user-1");
      }
      assertEquals([d.success, d.degraded], [false, false], "Redis answers again; refused");
      await limiter.idle();
      assertEquals(limiter.pending, 0);
      // The first request was lost with the old server; the 7 admitted while it was gone are
      // in, and the last token, leased when Redis came back: the isolate's own limiter, which
      // counted all 8, refused to spend it.
      assertEquals(await redisCount(redis, "rl:", policy, "user-1"), 8);
    } finally {
      await server.stop();
      await bridge.close();
    }
  }),
});

// ---------------------------------------------------------------------------------------------
// Cost: Redis commands per request, as Upstash counts them
// ---------------------------------------------------------------------------------------------

Deno.test({
  name: "cost: the feed's policy (120/min), warm: ≤ 1 Redis command and ≤ 1 HTTP request per " +
    "request on average (INFO commandstats of a Redis of its own; was 4 and 1)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: clocked(async () => {
    const server = await startRedisServer(freePort());
    const bridge = await startRedisBridge({ redisUrl: server.url, token: "t", port: 0 });
    const redis = new Redis({
      url: bridge.url,
      token: "t",
      enableAutoPipelining: true,
      enableTelemetry: false,
    });
    const stats = new IORedis(server.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    /** Commands executed so far, INFO itself left out (a script's inner calls included). */
    const commands = async () => {
      let n = 0;
      const info = await stats.info("commandstats");
      for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
        if (m[1] !== "info") n += Number(m[2]);
      }
      return n;
    };
    const cost = async (leased: boolean, run: (l: RateLimiter) => Promise<number>) => {
      const limiter = new RateLimiter({
        name: "feed",
        windows: [{ limit: 120, windowS: 60 }],
        failOpen: true,
        leased,
      }, { redis, prefix: `cost${leased}:` });
      await limiter.check("warm-up"); // the script loaded: warm
      const [c0, h0] = [await commands(), bridge.stats.requests];
      const n = await run(limiter);
      const [c, h] = [(await commands()) - c0, bridge.stats.requests - h0];
      return { commands: c / n, http: h / n };
    };
    const oneUser = async (l: RateLimiter) => {
      for (let i = 0; i < 100; i++) assert((await l.check("u")).success);
      return 100;
    };
    const fiftyUsers = async (l: RateLimiter) => {
      for (let i = 0; i < 30; i++) {
        await Promise.all(Array.from({ length: 50 }, (_, u) => l.check(`user-${u}`)));
      }
      return 1500;
    };
    try {
      now = epoch + 12 * H;
      const before = await cost(false, oneUser);
      const after = await cost(true, oneUser);
      const manyBefore = await cost(false, fiftyUsers);
      const many = await cost(true, fiftyUsers);
      const f = (c: { commands: number; http: number }) =>
        `${c.commands.toFixed(2)} commands, ${c.http.toFixed(3)} HTTP`;
      console.log(
        `[cost] per request → leased: 1 user × 100: ${f(before)} → ${f(after)}; ` +
          `50 users × 30, 50 at a time: ${f(manyBefore)} → ${f(many)}`,
      );
      // EVALSHA + GET + GET + INCRBY, and the bucket's PEXPIRE once.
      assertEquals(before.commands, 4.01);
      assert(after.commands <= 1, `${after.commands} commands per request`);
      assert(after.http <= 1, `${after.http} HTTP requests per request`);
      assert(many.commands <= 1, `${many.commands} commands per request (50 users)`);
      assert(many.http <= 1, `${many.http} HTTP requests per request (50 users)`);
    } finally {
      stats.disconnect();
      await bridge.close();
      await server.stop();
    }
  }),
});

Deno.test({
  name: "which policies are leased: the feed and other fail-open reads; never recall's, never " +
    "a fail-closed one",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const env = await functionTestEnv();
    try {
      const policies: RateLimitPolicy[] = [];
      const deps: Deps = {
        ...env.deps,
        rateLimiter: (policy) => (policies.push(policy), env.deps.rateLimiter(policy)),
      };
      for (const createApp of Object.values(functionApps)) createApp(deps);
      const leasedNames = policies.filter((p) => p.leased).map((p) => p.name).sort();
      assertEquals(leasedNames, [
        "events",
        "events-anon",
        "feed",
        "notifications",
        "profile-search",
      ]);
      for (const p of policies) {
        if (p.name.startsWith("recall") || !p.failOpen) assert(!p.leased, p.name);
      }
      assert(policies.some((p) => p.name.startsWith("recall")), "recall's policies were seen");
    } finally {
      await env.close();
    }
  },
});
