/**
 * Contract tests for shared/resilience/breaker.ts: the suite runs against the one store, Redis, through
 * the Upstash REST bridge in front of a real Redis (TEST_REDIS_URL) under a key prefix of its
 * own, with an injectable clock so no test sleeps.
 *
 * Run: `TEST_REDIS_URL=redis://127.0.0.1:6379 deno test -A shared/resilience/breaker_test.ts`
 */
import { assert, assertEquals, assertMatch } from "../../scripts/testing/assert.ts";
import {
  assertOpenError,
  calls,
  failure,
  type Fixture,
  MIN,
  redisFixture,
  stateOf,
  success,
  T0,
} from "../../scripts/testing/test_breaker.ts";
import { unitEnv } from "../../scripts/testing/unit_env.ts";
import {
  type BreakerOptions,
  Breakers,
  breakerStats,
  type BreakerStore,
  CircuitBreaker,
  CircuitOpenError,
} from "./breaker.ts";
import { createDeps } from "../deps.ts";

/** What each contract test gets. */
interface Ctx {
  fx: Fixture;
  /** The test clock: set `ctx.now`. */
  now: number;
  make(options?: BreakerOptions): CircuitBreaker;
}

{
  const it = (name: string, fn: (ctx: Ctx) => Promise<void>) =>
    Deno.test(`redis: ${name}`, async () => {
      const fx = await redisFixture();
      const ctx: Ctx = {
        fx,
        now: T0,
        make: (options = {}) =>
          new CircuitBreaker({
            name: `api-${crypto.randomUUID().slice(0, 8)}`,
            store: fx.store,
            clock: () => ctx.now,
            ...options,
          }),
      };
      try {
        await fn(ctx);
      } finally {
        await fx.close();
      }
    });

  it("opens after 5 consecutive failures, and counts the transition", async (ctx) => {
    const b = ctx.make();
    await calls(b, "FFFF");
    assertEquals(await b.state(), {
      name: b.name,
      state: "closed",
      generation: 0,
      failures: 4,
      open_until: null,
      window_calls: 4,
      window_failures: 4,
    });
    await failure(b);
    assertEquals(await b.state(), {
      name: b.name,
      state: "open",
      generation: 1,
      failures: 0,
      open_until: T0 + MIN,
      window_calls: 0,
      window_failures: 0,
    });
    assertEquals(breakerStats.transitions.get(`${b.name}:closed->open`), 1);
    assertEquals(b.cachedOpenUntil, T0 + MIN);
  });

  it("a success resets the consecutive count", async (ctx) => {
    const b = ctx.make();
    await calls(b, "FFFFSFFFF"); // 9 calls: below the window minimum, never 5 in a row
    assertEquals((await b.state()).failures, 4);
    assertEquals(await stateOf(b), "closed");
    await failure(b);
    assertEquals(await stateOf(b), "open");
  });

  it("failure rate ≥ 50 % over ≥ 10 calls opens it, with never 5 in a row", async (ctx) => {
    const b = ctx.make();
    await calls(b, "SFSFSFSFS"); // 4 of 9
    assertEquals(await stateOf(b), "closed");
    await failure(b); // 5 of 10 = 50 %
    assertEquals(await stateOf(b), "open");
  });

  it("below the minimum number of calls a high rate does not open it", async (ctx) => {
    const b = ctx.make();
    await calls(b, "FFFFSFFFF"); // 8 of 9 failed
    assertEquals(await stateOf(b), "closed");
    const s = await b.state();
    assertEquals([s.window_calls, s.window_failures], [9, 8]);
  });

  it("the window rolls: calls older than 60 s no longer count", async (ctx) => {
    const b = ctx.make();
    await calls(b, "SFSFS"); // bucket 0 (10 s buckets; T0 is a bucket start)
    ctx.now += 30_000;
    await calls(b, "FSFS"); // bucket 3
    assertEquals((await b.state()).window_calls, 9);
    ctx.now += 41_000; // 71 s after T0: bucket 0 has left the window, bucket 3 hasn't
    const s = await b.state();
    assertEquals([s.window_calls, s.window_failures], [4, 2]);
    await failure(b); // with bucket 0 still counted this would be 5 of 10
    assertEquals(await stateOf(b), "closed");
    const after = await b.state();
    assertEquals([after.window_calls, after.window_failures], [5, 3]);
  });

  it("open: rejects without calling fn, and without a round trip", async (ctx) => {
    const b = ctx.make();
    await calls(b, "FFFFF");
    ctx.now += 1000;
    const before = ctx.fx.requests();
    let called = 0;
    for (let i = 0; i < 3; i++) {
      const err = await assertOpenError(b.run(() => Promise.resolve(called++)));
      assertEquals(err.retryAfterMs, MIN - 1000);
      assertEquals(err.breaker, b.name);
    }
    assertEquals(called, 0);
    assertEquals(ctx.fx.requests(), before, "an open circuit must cost no HTTP request");
    assertEquals(breakerStats.rejected.get(b.name), 3);
  });

  it("a fresh instance (another isolate) learns 'open' from the store and then caches it", async (ctx) => {
    const a = ctx.make();
    await calls(a, "FFFFF");
    const b = new CircuitBreaker({ name: a.name, store: ctx.fx.store, clock: () => ctx.now });
    assertEquals(b.cachedOpenUntil, 0);
    await assertOpenError(b.acquire());
    assertEquals(b.cachedOpenUntil, T0 + MIN);
    const before = ctx.fx.requests();
    await assertOpenError(b.acquire());
    assertEquals(ctx.fx.requests(), before);
  });

  for (const maxProbes of [1, 3]) {
    it(`half-open admits exactly ${maxProbes} probe(s) among 50 parallel callers; successes close`, async (ctx) => {
      const b = ctx.make({ maxProbes });
      // Another isolate's instance of the same breaker: half the callers go through it.
      const peer = new CircuitBreaker({
        name: b.name,
        store: ctx.fx.store,
        clock: () => ctx.now,
        maxProbes,
      });
      await calls(b, "FFFFF");
      await assertOpenError(peer.acquire()); // the peer caches open-until too
      ctx.now += MIN;
      const callers = Array.from({ length: 50 }, (_, i) => (i % 2 ? b : peer));
      const before = ctx.fx.requests();
      const results = await Promise.allSettled(callers.map((c) => c.acquire()));
      assertEquals(ctx.fx.requests() - before, 1, "50 acquires auto-pipelined into one request");
      const permits = results.filter((r) => r.status === "fulfilled").map((r) => r.value);
      assertEquals(permits.length, maxProbes);
      for (const r of results) {
        if (r.status === "rejected") {
          assert(r.reason instanceof CircuitOpenError);
          assertEquals(r.reason.state, "half_open");
          assert(r.reason.retryAfterMs <= b.settings.probeTimeoutMs);
        }
      }
      assertEquals(new Set(permits.map((p) => p.probe)).size, maxProbes);
      assert(permits.every((p) => p.generation === 2), "open→half-open is generation 2");
      assertEquals(breakerStats.transitions.get(`${b.name}:open->half_open`), 1);
      for (const [i, p] of permits.entries()) {
        await b.record("success", p);
        assertEquals(await stateOf(b), i === maxProbes - 1 ? "closed" : "half_open");
      }
      const s = await b.state();
      assertEquals([s.generation, s.failures, s.open_until], [3, 0, null]);
      assertEquals(breakerStats.transitions.get(`${b.name}:half_open->closed`), 1);
      await success(b); // closed again: calls pass
    });
  }

  it("a probe failure reopens it for another 60 s under a new generation", async (ctx) => {
    const b = ctx.make({ maxProbes: 2 });
    await calls(b, "FFFFF");
    ctx.now += MIN;
    const [p1, p2] = await Promise.all([b.acquire(), b.acquire()]);
    await b.record("success", p1);
    await b.record("failure", p2);
    const s = await b.state();
    assertEquals([s.state, s.generation, s.open_until], ["open", 3, ctx.now + MIN]);
    assertEquals(breakerStats.transitions.get(`${b.name}:half_open->open`), 1);
    const err = await assertOpenError(b.acquire());
    assertEquals(err.retryAfterMs, MIN);
    ctx.now += MIN - 1;
    await assertOpenError(b.acquire());
    ctx.now += 1;
    const probe = await b.acquire();
    assertEquals([probe.generation, probe.probe], [4, 1]);
  });

  it("an expired probe permit lets a new probe in; the late outcome is ignored", async (ctx) => {
    const b = ctx.make({ probeTimeoutMs: 5000 });
    await calls(b, "FFFFF");
    ctx.now += MIN;
    const stale = await b.acquire();
    assertEquals(stale.expiresAt, ctx.now + 5000);
    const refused = await assertOpenError(b.acquire(), "half_open");
    assertEquals(refused.retryAfterMs, 5000);
    ctx.now += 5000;
    const fresh = await b.acquire();
    assertEquals([fresh.probe, fresh.generation], [stale.probe, stale.generation]);
    assert(fresh.token > stale.token);
    const late = await b.record("failure", stale); // the dead isolate's call, finally back
    assertEquals(late?.applied, false);
    assertEquals(await stateOf(b), "half_open");
    await b.record("success", fresh);
    assertEquals(await stateOf(b), "closed");
  });

  it("an outcome from an older generation is ignored", async (ctx) => {
    const b = ctx.make();
    const old = await b.acquire(); // a slow call started while closed
    await calls(b, "FFFFF"); // meanwhile the API broke
    const res = await b.record("success", old);
    assertEquals(res?.applied, false);
    assertEquals(res?.state, "open");
    const s = await b.state();
    assertEquals([s.state, s.generation], ["open", 1]);
    // and a failure from before a recovery does not count against the recovered API
    ctx.now += MIN;
    await success(b);
    assertEquals(await stateOf(b), "closed");
    const res2 = await b.record("failure", old);
    assertEquals(res2?.applied, false);
    assertEquals((await b.state()).failures, 0);
  });

  it("4xx are not failures; 429, 5xx, timeouts and network errors are", async (ctx) => {
    const b = ctx.make();
    const httpError = (status: number) => Object.assign(new Error(`HTTP ${status}`), { status });
    for (let i = 0; i < 12; i++) {
      await b.run(() => Promise.reject(httpError(400 + (i % 4)))).catch(() => {});
      await b.run(() => Promise.resolve(new Response(null, { status: 404 })));
    }
    let s = await b.state();
    assertEquals([s.state, s.failures, s.window_failures], ["closed", 0, 0]);
    const failures: (() => Promise<unknown>)[] = [
      () => Promise.resolve(new Response("slow down", { status: 429 })),
      () => Promise.resolve(new Response("oops", { status: 503 })),
      () => Promise.reject(new DOMException("deadline", "TimeoutError")),
      () => Promise.reject(new DOMException("aborted", "AbortError")),
    ];
    for (const fn of failures) {
      const r = await b.run(fn).then((v) => v, (e) => e);
      if (r instanceof Response) await r.body?.cancel();
    }
    s = await b.state();
    assertEquals([s.state, s.failures], ["closed", 4]);
    const network = new TypeError("error sending request: connection refused");
    const thrown = await b.run(() => Promise.reject(network)).catch((e) => e);
    assertEquals(thrown, network, "run rethrows the original error");
    assertEquals(await stateOf(b), "open");
  });

  it("state() for /health and per-transition counters", async (ctx) => {
    const b = ctx.make({ failureThreshold: 2 });
    await calls(b, "FF");
    ctx.now += MIN;
    await success(b);
    const s = await b.state();
    assertEquals(s.state, "closed");
    assertEquals(s.generation, 3);
    assertEquals(
      ["closed->open", "open->half_open", "half_open->closed"].map((t) =>
        breakerStats.transitions.get(`${b.name}:${t}`)
      ),
      [1, 1, 1],
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Store independent
// ---------------------------------------------------------------------------------------------

/** A store whose Redis is down. */
const down: BreakerStore = {
  acquire: () => Promise.reject(new Error("Redis unavailable")),
  record: () => Promise.reject(new Error("Redis unavailable")),
  read: () => Promise.reject(new Error("Redis unavailable")),
};

Deno.test("a failing store lets calls through (failOpen) or rejects (failOpen: false)", async () => {
  const open = new CircuitBreaker({ name: "down", store: down });
  assertEquals(await open.run(() => Promise.resolve(42)), 42);
  assertEquals(breakerStats.storeErrors.get("down"), 1);
  const closed = new CircuitBreaker({ name: "down2", store: down, failOpen: false });
  let called = false;
  try {
    await closed.run(() => Promise.resolve(called = true));
    throw new Error("expected the store's error");
  } catch (err) {
    assertEquals((err as Error).message, "Redis unavailable");
  }
  assert(!called);
});

Deno.test("breakers need Redis: deps without it are refused naming the variable; /health reports a store it can't read per breaker", async () => {
  // Redis is checked at boot: a function without it doesn't start.
  let message = "";
  try {
    createDeps({ DATABASE_URL: unitEnv.DATABASE_URL });
  } catch (err) {
    message = (err as Error).message;
  }
  assertMatch(message, /UPSTASH_REDIS_REST_URL: required/);
  // "two processes share one breaker" covers the registry with Redis (one instance per name,
  // listed for /health). With its Redis down, a breaker reports the store's error when read,
  // and /health lists every known API with that error instead of failing the whole answer.
  const breakers = new Breakers(down);
  const b = breakers.get("openai-chat");
  assert(breakers.get("openai-chat") === b, "one instance per name");
  message = "";
  try {
    await b.state();
  } catch (err) {
    message = (err as Error).message;
  }
  assertMatch(message, /Redis unavailable/);
  const health = await breakers.health();
  assertEquals(health.map((h) => h.name), [
    "openai-chat",
    "openai-transcribe",
    "acrcloud",
    "shazam",
  ]);
  assert(health.every((h) => "error" in h && /Redis unavailable/.test(h.error)));
});

Deno.test("run(): a probe gets a signal bounded by its permit, ordinary calls none", async () => {
  let now = T0;
  const fx = await redisFixture();
  const b = new CircuitBreaker({
    name: "signal",
    store: fx.store,
    clock: () => now,
    probeTimeoutMs: 20,
  });
  try {
    assertEquals(await b.run((signal) => Promise.resolve(signal)), undefined);
    await calls(b, "FFFFF");
    now += MIN;
    // The probe outlives its permit: its signal aborts, the abort counts as a failure, and since
    // no other probe took the slot yet, the outcome still applies and reopens the circuit.
    const err = await b.run((signal) =>
      new Promise((_, reject) => signal!.addEventListener("abort", () => reject(signal!.reason)))
    ).catch((e) => e);
    assertEquals((err as DOMException).name, "TimeoutError");
    assertEquals(await stateOf(b), "open");
  } finally {
    await fx.close();
  }
});
