/**
 * Contract tests for request coalescing: single-flight in an isolate, and the cross-isolate
 * protocol with two RedisCoalescer instances (two in-isolate maps) sharing one Redis behind
 * the Upstash REST bridge.
 *
 * Run: `TEST_REDIS_URL=redis://127.0.0.1:6379 deno test -A shared/resilience/coalesce_test.ts`
 */
import { Redis } from "@upstash/redis";
import { assert, assertEquals, assertRejects } from "../../scripts/testing/assert.ts";
import { freePort, startRedisServer } from "../../scripts/dev/local_services.ts";
import { type TestRedis, testRedis } from "../../scripts/testing/test_redis.ts";
import {
  CoalescedFailure,
  type CoalesceOptions,
  type Coalescer,
  type CoalescerOptions,
  newCoalesceStats,
  RedisCoalescer,
  SingleFlight,
} from "./coalesce.ts";
import { ProblemError } from "../http/problem.ts";
import { gated, observedSleep } from "../../scripts/testing/gates.ts";

interface Harness {
  /** A coalescer as one isolate sees it (with Redis: its own client, like a real isolate). */
  make(options?: CoalescerOptions): Coalescer;
  fixture?: TestRedis;
}

const kinds: Record<string, () => Promise<Harness & { close(): Promise<void> }>> = {
  redis: async () => {
    const fixture = await testRedis();
    const made: InstanceType<typeof RedisCoalescer>[] = [];
    return {
      fixture,
      make(options = {}) {
        const c = new PatientCoalescer(isolateClient(fixture), `${fixture.prefix}co:`, {
          stats: newCoalesceStats(),
          ...options,
        });
        made.push(c);
        return c;
      },
      async close() {
        await Promise.all(made.map((c) => c.idle()));
        await fixture.close();
      },
    };
  },
};

/**
 * Waits for Redis's decision (5 s, not 100 ms) unless a test says otherwise: these contracts
 * are about who leads and who follows, which Redis decides; under the full suite's load a
 * 100 ms window can pass first, and the caller then computes alone (a fallback: "redis gone"
 * tests that with a coalescer of its own), which a test waiting for a follower's poll would
 * wait for forever.
 */
class PatientCoalescer extends RedisCoalescer {
  override run<T>(key: string, compute: () => Promise<T>, options: CoalesceOptions = {}) {
    return super.run(key, compute, { decisionMs: 5000, ...options });
  }
}

/** A separate client on the same bridge: no auto-pipelining across "isolates". */
function isolateClient(fixture: TestRedis): Redis {
  return new Redis({
    url: fixture.bridge.url,
    token: fixture.bridge.token,
    retry: { retries: 1, backoff: () => 20 },
    enableAutoPipelining: true,
    enableTelemetry: false,
  });
}

function contract(name: string, fn: (h: Harness) => Promise<void>, only?: string) {
  for (const [kind, make] of Object.entries(kinds)) {
    if (only && kind !== only) continue;
    Deno.test(`${kind}: ${name}`, async () => {
      const h = await make();
      try {
        await fn(h);
      } finally {
        await h.close();
      }
    });
  }
}

contract("50 concurrent identical calls in one isolate compute once", async ({ make }) => {
  const stats = newCoalesceStats();
  const co = make({ stats });
  const g = gated<{ n: number }>();
  const calls = Array.from({ length: 50 }, () => co.run("k", g.compute));
  await g.started;
  g.resolve({ n: 7 });
  const results = await Promise.all(calls);
  assertEquals(g.runs, 1);
  assert(results.every((r) => r === results[0]), "in-isolate callers share the very value");
  assertEquals(results[0], { n: 7 });
  assertEquals([stats.leader, stats.localShares], [1, 49]);
  // Not a cache: the next call computes again.
  assertEquals(await co.run("k", () => Promise.resolve({ n: 8 })), { n: 8 });
});

contract("a failure is shared with concurrent callers, never kept", async ({ make }) => {
  const co = make();
  const g = gated<number>();
  const calls = Array.from({ length: 5 }, () => co.run("k", g.compute));
  await g.started;
  g.reject(new Error("provider down"));
  for (const call of calls) await assertRejects(() => call, /provider down/);
  assertEquals(g.runs, 1);
  assertEquals(await co.run("k", () => Promise.resolve(1)), 1);
});

contract("an aborted caller stops waiting; the others still get the value", async ({ make }) => {
  const co = make();
  const g = gated<string>();
  const controller = new AbortController();
  const impatient = co.run("k", g.compute, { signal: controller.signal });
  const patient = co.run("k", g.compute);
  await g.started;
  controller.abort(new Error("gave up"));
  await assertRejects(() => impatient, /gave up/);
  g.resolve("v");
  assertEquals(await patient, "v");
  assertEquals(g.runs, 1);
});

Deno.test("SingleFlight: a synchronous throw becomes a shared rejection", async () => {
  const sf = new SingleFlight();
  const { promise, shared } = sf.run("k", () => {
    throw new Error("sync");
  });
  assert(!shared);
  await assertRejects(() => promise, /sync/);
  assertEquals(sf.size, 0);
});

// ---- across isolates: two RedisCoalescer instances, one Redis --------------------------------

contract("two isolates: the slow compute runs once, both get the value", async ({ make }) => {
  const statsA = newCoalesceStats();
  const statsB = newCoalesceStats();
  const polls = observedSleep();
  const a = make({ stats: statsA });
  const b = make({ stats: statsB, sleep: polls.sleep });
  const g = gated<{ feed: number[] }>();
  const leader = a.run("feed", g.compute);
  await g.started; // a holds the lock now
  const followers = Array.from({ length: 10 }, () => b.run("feed", g.compute));
  await polls.waiting(); // b found the lock taken
  g.resolve({ feed: [1, 2, 3] });
  assertEquals(await leader, { feed: [1, 2, 3] });
  for (const f of followers) assertEquals(await f, { feed: [1, 2, 3] });
  assertEquals(g.runs, 1);
  assertEquals([statsA.leader, statsB.followers, statsB.localShares], [1, 1, 9]);
  assertEquals(statsB.fallbacks, 0);
}, "redis");

contract(
  "two isolates: the leader's failure reaches the waiter, then is gone",
  async ({ make }) => {
    const polls = observedSleep();
    const a = make();
    const b = make({ sleep: polls.sleep });
    const g = gated<number>();
    const leader = a.run("k", g.compute);
    await g.started;
    const follower = b.run("k", g.compute);
    await polls.waiting();
    g.reject(new Error("upstream 502"));
    await assertRejects(() => leader, /upstream 502/);
    await assertRejects(() => follower, /upstream 502/);
    await follower.catch((err) => assert(err instanceof CoalescedFailure));
    assertEquals(g.runs, 1);
    // The next call, from either isolate, computes again: the failure was not cached.
    assertEquals(await b.run("k", () => Promise.resolve(2)), 2);
    assertEquals(await a.run("k", () => Promise.resolve(3)), 3);
  },
  "redis",
);

contract("two isolates: a ProblemError crosses as a ProblemError", async ({ make }) => {
  const polls = observedSleep();
  const a = make();
  const b = make({ sleep: polls.sleep });
  const g = gated<number>();
  const leader = a.run("k", g.compute);
  await g.started;
  const follower = b.run("k", g.compute);
  await polls.waiting();
  g.reject(
    new ProblemError(503, "unavailable", "provider busy", { headers: { "retry-after": "3" } }),
  );
  await leader.catch(() => {});
  const err = await follower.then(() => null, (e) => e);
  assert(err instanceof ProblemError);
  assertEquals([err.status, err.code, err.detail], [503, "unavailable", "provider busy"]);
  assertEquals(err.options.headers, { "retry-after": "3" });
}, "redis");

contract("lock expiry with a dead leader: a follower takes over", async ({ make }) => {
  const statsB = newCoalesceStats();
  const a = make();
  const b = make({ stats: statsB });
  const stuck = gated<string>(); // never finishes until the end of the test
  const leader = a.run("k", stuck.compute, { lockTtlMs: 100 });
  await stuck.started;
  let bRuns = 0;
  const value = await b.run("k", () => Promise.resolve(`b${++bRuns}`), { waitMs: 5_000 });
  assertEquals(value, "b1");
  assertEquals([statsB.takeovers, statsB.leader, statsB.fallbacks], [1, 1, 0]);
  stuck.resolve("late"); // its compare-and-delete must not touch b's (already released) lock
  assertEquals(await leader, "late");
}, "redis");

contract(
  "wait timeout with a live but slow leader: the follower computes itself",
  async ({ make }) => {
    const statsB = newCoalesceStats();
    const a = make();
    const b = make({ stats: statsB });
    const slow = gated<string>();
    const leader = a.run("k", slow.compute, { lockTtlMs: 30_000 });
    await slow.started;
    const start = performance.now();
    const value = await b.run("k", () => Promise.resolve("own"), { waitMs: 150 });
    const waited = performance.now() - start;
    assertEquals(value, "own");
    assert(waited >= 150, `gave up after waitMs (${waited.toFixed(0)} ms)`);
    assertEquals([statsB.fallbacks, statsB.followers], [1, 0]);
    slow.resolve("leader");
    assertEquals(await leader, "leader");
  },
  "redis",
);

contract("values round-trip between isolates", async ({ make }) => {
  const polls = observedSleep();
  const a = make();
  const b = make({ sleep: polls.sleep });
  const values: unknown[] = [
    { id: "s1", tags: ["a", "b"], nested: { n: 1.5, ok: true, none: null } },
    [1, "two", { three: 3 }, null],
    "plain string",
    "123", // a numeric-looking string stays a string
    "",
    42,
    -0.25,
    0,
    true,
    null,
  ];
  for (const [i, value] of values.entries()) {
    const g = gated<unknown>();
    const leader = a.run(`v${i}`, g.compute);
    await g.started;
    const follower = b.run(`v${i}`, g.compute);
    await polls.waiting();
    g.resolve(value);
    await leader;
    assertEquals(await follower, value, `value ${JSON.stringify(value)}`);
    assertEquals(g.runs, 1);
  }
}, "redis");

Deno.test("redis: round trips — leader 2, follower 1 + one per poll", async () => {
  const fixture = await testRedis();
  const statsB = newCoalesceStats();
  const polls = observedSleep();
  const prefix = `${fixture.prefix}co:`;
  const a = new RedisCoalescer(isolateClient(fixture), prefix, { stats: newCoalesceStats() });
  const b = new RedisCoalescer(isolateClient(fixture), prefix, {
    stats: statsB,
    sleep: polls.sleep,
  });
  const count = () => fixture.bridge.stats.requests;
  try {
    await a.run("warm", () => Promise.resolve(0)); // loads both scripts (EVALSHA→EVAL once)
    let before = count();
    assertEquals(await a.run("alone", () => Promise.resolve(1)), 1);
    assertEquals(count() - before, 2, "leader: claim + publish/release");

    const g = gated<number>();
    const leader = a.run("shared", g.compute);
    await g.started;
    before = count(); // a is blocked in compute: every request from here on is b's
    const follower = b.run("shared", g.compute);
    await polls.waiting();
    assertEquals(count() - before, 1, "follower: one claim before its first wait");
    g.resolve(9);
    await leader; // a's one publish/release
    assertEquals(await follower, 9);
    assertEquals(count() - before, 1 + statsB.polls + 1, "follower: claim + one per poll");
    assertEquals(statsB.followers, 1);
  } finally {
    await a.idle();
    await b.idle();
    await fixture.close();
  }
});

Deno.test("redis gone: every caller computes for itself, quickly", async () => {
  const server = await startRedisServer(freePort());
  const fixture = await testRedis(server.url);
  const stats = newCoalesceStats();
  const co = new RedisCoalescer(fixture.redis, `${fixture.prefix}co:`, { stats });
  try {
    await co.run("warm", () => Promise.resolve(0));
    await server.stop();
    // Counted from here: under the suite's load the warm-up's claim can itself miss its window.
    const fallbacksBefore = stats.fallbacks;
    const start = performance.now();
    assertEquals(await co.run("k", () => Promise.resolve("computed")), "computed");
    const ms = performance.now() - start;
    assert(ms < 250, `fell back in ${ms.toFixed(0)} ms`);
    assertEquals(stats.fallbacks - fallbacksBefore, 1);
  } finally {
    await co.idle();
    await fixture.close();
    await server.stop();
  }
});
