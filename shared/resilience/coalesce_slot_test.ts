/**
 * Contract tests of shared results (coalesce_slot.ts): kept values, one computation across
 * isolates under its caller's slot, refusals that leave no lock behind, failures, what is sent
 * with the finish, and a Redis that can't decide. Two instances with clients of their own are
 * two isolates, on one Redis behind the Upstash REST bridge.
 *
 * Run: `TEST_REDIS_URL=redis://127.0.0.1:6379 deno test -A shared/resilience/coalesce_slot_test.ts`
 */
import { Redis } from "@upstash/redis";
import { assert, assertEquals, assertRejects } from "../../scripts/testing/assert.ts";
import { type TestRedis, testRedis } from "../../scripts/testing/test_redis.ts";
import { newCoalesceStats } from "./coalesce.ts";
import { type SharedOptions, SharedResults } from "./coalesce_slot.ts";
import { ProblemError } from "../http/problem.ts";
import { gated, observedSleep } from "../../scripts/testing/gates.ts";

/** The ProblemError `p` rejects with (fails when it resolves or rejects with anything else). */
async function problem(p: Promise<unknown>): Promise<ProblemError> {
  const err = await p.then(() => null, (e) => e);
  assert(err instanceof ProblemError, `expected a ProblemError, got ${err}`);
  return err;
}

/** An isolate's client: its own auto-pipeline, on the shared bridge. */
function isolateClient(t: TestRedis): Redis {
  return new Redis({
    url: t.bridge.url,
    token: t.bridge.token,
    retry: { retries: 1, backoff: () => 20 },
    enableAutoPipelining: true,
    enableTelemetry: false,
  });
}

interface Fixture {
  t: TestRedis;
  /** One isolate's shared results. */
  make(options?: { sleep?: (ms: number) => Promise<void>; redis?: Redis }): SharedResults;
  /** Options of a run for `user` (slots: `limit`), keeping the value at `stored` when given. */
  options<T>(
    user: string,
    extra?: Partial<SharedOptions<T>> & { limit?: number; stored?: string },
  ): SharedOptions<T>;
  slotKey(user: string): string;
  lockKey(key: string): string;
}

const policy = "test-slots";

function test(name: string, fn: (f: Fixture) => Promise<void>) {
  Deno.test(`redis: ${name}`, async () => {
    const t = await testRedis();
    const made: SharedResults[] = [];
    const f: Fixture = {
      t,
      make(o = {}) {
        const s = new SharedResults(o.redis ?? isolateClient(t), {
          prefix: `${t.prefix}co:`,
          slotPrefix: `${t.prefix}lease:`,
          stats: newCoalesceStats(),
          sleep: o.sleep,
        });
        made.push(s);
        return s;
      },
      options(user, extra = {}) {
        const { limit = 5, stored, ...rest } = extra;
        return {
          slot: {
            name: policy,
            key: user,
            limit,
            ttlMs: 10_000,
            failOpen: false,
            decisionMs: 2000,
          },
          lockTtlMs: 10_000,
          waitMs: 5_000,
          ...(stored ? { store: { key: `${t.prefix}${stored}`, ttlMs: 60_000 } } : {}),
          ...rest,
        };
      },
      slotKey: (user) => `${t.prefix}lease:${policy}:${user}`,
      lockKey: (key) => `${t.prefix}co:${key}:lock`,
    };
    try {
      await fn(f);
    } finally {
      await Promise.all(made.map((s) => s.idle()));
      await t.close();
    }
  });
}

test("a kept value: computed once, then read from Redis elsewhere, and here with no request", async (f) => {
  const a = f.make();
  const b = f.make();
  let runs = 0;
  const compute = () => Promise.resolve({ answer: ++runs });
  const first = await a.run("q", compute, f.options("u1", { stored: "answer:q" }));
  assertEquals(first, { value: { answer: 1 }, computed: true });
  const requests = () => f.t.bridge.stats.requests;
  let before = requests();
  const elsewhere = await b.run("q", compute, f.options("u2", { stored: "answer:q" }));
  assertEquals(elsewhere, { value: { answer: 1 }, computed: false });
  assertEquals(requests() - before, 1, "one begin");
  before = requests();
  for (const s of [a, b]) {
    const here = await s.run("q", compute, f.options("u3", { stored: "answer:q" }));
    assertEquals(here, { value: { answer: 1 }, computed: false });
  }
  assertEquals(requests() - before, 0, "this isolate's copy");
  assertEquals(runs, 1);
  assertEquals(await f.t.redis.zcard(f.slotKey("u1")), 0, "the leader's slot is released");
  assertEquals(await f.t.redis.exists(f.lockKey("q")), 0);
});

test("two isolates at once: one computes under its caller's slot, the other follows", async (f) => {
  const polls = observedSleep();
  const a = f.make();
  const b = f.make({ sleep: polls.sleep });
  const g = gated<{ n: number }>();
  const leader = a.run("q", g.compute, f.options("u1"));
  await g.started;
  assertEquals(await f.t.redis.zcard(f.slotKey("u1")), 1);
  const followers = Array.from({ length: 5 }, () => b.run("q", g.compute, f.options("u2")));
  await polls.waiting(); // b found the lock taken
  assertEquals(await f.t.redis.zcard(f.slotKey("u2")), 0, "a follower holds no slot");
  g.resolve({ n: 7 });
  assertEquals(await leader, { value: { n: 7 }, computed: true });
  for (const follower of followers) {
    assertEquals(await follower, { value: { n: 7 }, computed: false });
  }
  assertEquals(g.runs, 1);
  assertEquals(b.stats.followers, 1);
  assertEquals(b.stats.localShares, 4);
  assertEquals(await f.t.redis.zcard(f.slotKey("u1")), 0);
  assertEquals(await f.t.redis.exists(f.lockKey("q")), 0);
  // Not kept (no store): the next call computes again.
  assertEquals((await b.run("q", () => Promise.resolve({ n: 8 }), f.options("u2"))).value, {
    n: 8,
  });
});

test("a caller whose slots are all taken: 429 naming the policy, and no lock left behind", async (f) => {
  const a = f.make();
  const g = gated<number>();
  const holding = a.run("first", g.compute, f.options("u1", { limit: 1 }));
  await g.started;
  const err = await problem(
    a.run("second", () => Promise.resolve(1), f.options("u1", { limit: 1 })),
  );
  assertEquals([err.status, err.options.extensions?.policy], [429, policy]);
  assert(Number(err.options.headers?.["retry-after"]) >= 1);
  assertEquals(await f.t.redis.exists(f.lockKey("second")), 0, "nobody waits for a refused caller");
  // Another user asking the same thing leads at once.
  const other = await f.make().run("second", () => Promise.resolve(2), f.options("u2"));
  assertEquals(other, { value: 2, computed: true });
  g.resolve(0);
  await holding;
});

test("in one isolate, a caller sharing an attempt refused for another user's slots computes under its own", async (f) => {
  const a = f.make();
  const g = gated<number>();
  const holding = a.run("busy", g.compute, f.options("u1", { limit: 1 }));
  await g.started; // u1's only slot is taken
  let runs = 0;
  const compute = () => Promise.resolve(++runs);
  const refused = a.run("q", compute, f.options("u1", { limit: 1 }));
  const sharer = a.run("q", compute, f.options("u2", { limit: 1 }));
  await problem(refused);
  assertEquals(await sharer, { value: 1, computed: true });
  assertEquals(runs, 1);
  g.resolve(0);
  await holding;
});

test("values not worth keeping are shared with the callers waiting only", async (f) => {
  const polls = observedSleep();
  const a = f.make();
  const b = f.make({ sleep: polls.sleep });
  const g = gated<{ degraded: boolean }>();
  const keep = (v: { degraded: boolean }) => !v.degraded;
  const options = (user: string) => {
    const o = f.options<{ degraded: boolean }>(user, { stored: "answer:q" });
    return { ...o, store: { ...o.store!, keep } };
  };
  const leader = a.run("q", g.compute, options("u1"));
  await g.started;
  const follower = b.run("q", g.compute, options("u2"));
  await polls.waiting();
  g.resolve({ degraded: true });
  assertEquals((await leader).value, { degraded: true });
  assertEquals(await follower, { value: { degraded: true }, computed: false });
  assertEquals(await f.t.redis.exists(`${f.t.prefix}answer:q`), 0);
  const again = await a.run("q", () => Promise.resolve({ degraded: false }), options("u1"));
  assertEquals(again, { value: { degraded: false }, computed: true });
});

test("the leader's failure reaches its follower as it was; nothing kept, the slot released", async (f) => {
  const polls = observedSleep();
  const a = f.make();
  const b = f.make({ sleep: polls.sleep });
  const g = gated<number>();
  const leader = a.run("q", g.compute, f.options("u1", { stored: "answer:q" }));
  await g.started;
  const follower = b.run("q", g.compute, f.options("u2", { stored: "answer:q" }));
  await polls.waiting();
  g.reject(new ProblemError(504, "timeout", "the providers took too long"));
  await assertRejects(() => leader, /the providers took too long/);
  const err = await problem(follower);
  assertEquals([err.status, err.code], [504, "timeout"]);
  assertEquals(g.runs, 1);
  assertEquals(await f.t.redis.exists(`${f.t.prefix}answer:q`), 0);
  assertEquals(await f.t.redis.zcard(f.slotKey("u1")), 0);
});

test("what is sent with begin and finish shares their HTTP requests: a cold run is 2", async (f) => {
  const a = f.make();
  await a.run("warm", () => Promise.resolve(0), f.options("u0", { stored: "answer:warm" }));
  const before = f.t.bridge.stats.requests;
  const counted = (step: string) => `${f.t.prefix}along:${step}`;
  const redis = isolateClient(f.t);
  const shared = f.make({ redis });
  const options = {
    ...f.options<number>("u1", { stored: "answer:q" }),
    alongBegin: () => void redis.incr(counted("begin")),
  };
  const value = await shared.run("q", (leader) => {
    leader.alongFinish(() => redis.incr(counted("finish")));
    return Promise.resolve(42);
  }, options);
  assertEquals(value, { value: 42, computed: true });
  assertEquals(f.t.bridge.stats.requests - before, 2, "begin with one INCR, finish with the other");
  assertEquals([await f.t.redis.get(counted("begin")), await f.t.redis.get(counted("finish"))], [
    1,
    1,
  ]);
  // A value this isolate kept asks Redis nothing: nothing goes out along either.
  const kept = await shared.run("q", () => Promise.resolve(0), options);
  assertEquals(kept, { value: 42, computed: false });
  assertEquals(await f.t.redis.get(counted("begin")), 1);
});

test("Redis unreachable: a fail-closed slot is a 503, a fail-open one computes without", async (f) => {
  const down = new Redis({
    url: "http://127.0.0.1:9", // discard port: nothing answers
    token: "x",
    retry: false,
    enableTelemetry: false,
  });
  const s = f.make({ redis: down });
  let runs = 0;
  const compute = () => Promise.resolve(++runs);
  const err = await problem(s.run("q", compute, f.options("u1")));
  assertEquals(err.status, 503);
  assertEquals(runs, 0);
  const open = f.options<number>("u1");
  const value = await s.run("q", compute, { ...open, slot: { ...open.slot, failOpen: true } });
  assertEquals(value, { value: 1, computed: true });
});
