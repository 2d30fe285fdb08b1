/**
 * The breaker's round-trip savings (breaker.ts), for callers that ask for them: a recent
 * "closed" trusted (`trustClosedMs`), `peek()` sharing another command's request, and
 * successes held in {@link DeferredOutcomes} and recorded together. Against a real Redis
 * behind the Upstash REST bridge.
 *
 * Run: `TEST_REDIS_URL=redis://127.0.0.1:6379 deno test -A shared/resilience/breaker_trust_test.ts`
 */
import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { assertOpenError, calls, MIN, T0 } from "../../scripts/testing/test_breaker.ts";
import { type TestRedis, testRedis } from "../../scripts/testing/test_redis.ts";
import { CircuitBreaker, DeferredOutcomes, RedisBreakerStore } from "./breaker.ts";

const trust = { trustClosedMs: 2000 };

/** A breaker (one isolate's instance) on `t`, its clock at `clock.now`, and a request counter. */
function fixture(t: TestRedis, clock: { now: number }, name = "api") {
  const make = () =>
    new CircuitBreaker({
      name,
      store: new RedisBreakerStore(t.redis, `${t.prefix}breaker:`),
      clock: () => clock.now,
    });
  const count = async (work: () => Promise<unknown>) => {
    const before = t.bridge.stats.requests;
    await work();
    return t.bridge.stats.requests - before;
  };
  return { make, count };
}

Deno.test("redis: a 'closed' heard within trustClosedMs grants without a round trip", async () => {
  const t = await testRedis();
  try {
    const clock = { now: T0 };
    const { make, count } = fixture(t, clock);
    const b = make();
    await calls(b, "S"); // loads the scripts; the record's reply says closed
    assertEquals(await count(() => b.acquire(trust)), 0, "closed heard just now");
    assertEquals(await count(() => b.acquire()), 1, "no trust asked: the store decides");
    clock.now += 1999;
    assertEquals(await count(() => b.acquire(trust)), 0);
    clock.now += 2000;
    assertEquals(await count(() => b.acquire(trust)), 1, "too old: asked again");
    assertEquals(await count(() => b.acquire(trust)), 0, "and trusted again");
  } finally {
    await t.close();
  }
});

Deno.test("redis: another isolate opens it: a trusting isolate learns at its first record", async () => {
  const t = await testRedis();
  try {
    const clock = { now: T0 };
    const { make, count } = fixture(t, clock);
    const a = make();
    const b = make();
    await calls(a, "S");
    await calls(b, "FFFFF"); // b opens it
    const permit = await a.acquire(trust); // the documented miss: a still trusts "closed"
    await a.record("failure", permit);
    assertEquals(a.cachedOpenUntil, T0 + MIN, "the ignored record's reply said open");
    assertEquals(await count(() => assertOpenError(a.acquire(trust))), 0);
  } finally {
    await t.close();
  }
});

Deno.test("redis: peek shares a request with the caller's commands and takes no probe slot", async () => {
  const t = await testRedis();
  try {
    const clock = { now: T0 };
    const { make, count } = fixture(t, clock);
    const b = make();
    await calls(b, "S");
    await b.peek(0); // the peek script loaded
    clock.now += 5000;
    // Stale: the peek goes out, in one request with a command issued beside it.
    assertEquals(
      await count(() => Promise.all([b.peek(2000), t.redis.incr(`${t.prefix}other`)])),
      1,
    );
    assertEquals(await count(() => b.peek(2000)), 0, "fresh: nothing to ask");
    assertEquals(await count(() => b.acquire(trust)), 0, "the acquire after it is free");

    // Open, and due to half-open: a peek learns that, and leaves the probe slot to the acquire.
    await calls(b, "FFFFF");
    clock.now += MIN;
    assertEquals(await count(() => b.peek(2000)), 1);
    const probe = await b.acquire(trust);
    assertEquals(probe.probe, 1, "the probe permit is still there for the call");
    assertEquals((await b.state()).state, "half_open");
  } finally {
    await t.close();
  }
});

Deno.test("redis: held successes are recorded together at flush; failures and probes at once", async () => {
  const t = await testRedis();
  try {
    const clock = { now: T0 };
    const { make, count } = fixture(t, clock);
    const b = make();
    await calls(b, "S");
    const deferred = new DeferredOutcomes();
    const ok = () => Promise.resolve("ok");
    assertEquals(await count(() => b.run(ok, undefined, { ...trust, deferred })), 0);
    assertEquals(await count(() => b.run(ok, undefined, { ...trust, deferred })), 0);
    assertEquals(deferred.size, 2);
    assertEquals((await b.state()).window_calls, 1, "held, not recorded yet");
    // A failure is recorded at once (the breaker must open when it did).
    const fail = () => Promise.reject(new Error("upstream 502"));
    assertEquals(
      await count(() => b.run(fail, undefined, { ...trust, deferred }).catch(() => {})),
      1,
    );
    assertEquals((await b.state()).failures, 1);
    // Flushed with another command beside it: one request, one step for both successes.
    assertEquals(
      await count(() => Promise.all([deferred.flush(), t.redis.incr(`${t.prefix}other`)])),
      1,
    );
    const s = await b.state();
    assertEquals([s.window_calls, s.window_failures, s.failures], [4, 1, 0]);
    assertEquals(deferred.size, 0);

    // A probe's success is recorded at once: it closes the breaker.
    await calls(b, "FFFFF");
    clock.now += MIN;
    await b.run(ok, undefined, { ...trust, deferred });
    assertEquals(deferred.size, 0);
    assertEquals((await b.state()).state, "closed");
    assert(!b.cachedOpenUntil);
  } finally {
    await t.close();
  }
});
