/**
 * Contract tests for concurrency leases: every behaviour against the one store, Redis behind
 * the Upstash REST bridge, with the clock moved by hand instead of sleeping; and the
 * in-isolate KeyedSlots cap searches put in front of it.
 *
 * Run: `TEST_REDIS_URL=redis://127.0.0.1:6379 deno test -A shared/resilience/lease_test.ts`
 */
import { Hono } from "hono";
import { assert, assertEquals, assertRejects } from "../../scripts/testing/assert.ts";
import { freePort, startRedisServer } from "../../scripts/dev/local_services.ts";
import { type TestRedis, testRedis } from "../../scripts/testing/test_redis.ts";
import {
  concurrencyLimit,
  type ConcurrencyPolicy,
  type LeaseStore,
  RedisLeaseStore,
  type SlotPolicy,
  withSlot,
} from "./lease.ts";
import { ProblemError, problemResponse, toProblem } from "../http/problem.ts";
import { KeyedSlots } from "./slots.ts";

/** A store plus the hand-moved clock it reads. */
interface Harness {
  store: LeaseStore;
  /** Moves the store's clock forward. */
  advance(ms: number): void;
  fixture?: TestRedis;
}

const kinds: Record<string, () => Promise<Harness & { close(): Promise<void> }>> = {
  redis: async () => {
    const fixture = await testRedis();
    const time = { now: Date.now() };
    const store = new RedisLeaseStore(fixture.redis, `${fixture.prefix}lease:`, () => time.now);
    return {
      store,
      fixture,
      advance: (ms) => void (time.now += ms),
      close: async () => {
        await store.idle();
        await fixture.close();
      },
    };
  },
};

/** Registers `fn` once per store; each run gets a fresh store (and Redis fixture). */
function contract(name: string, fn: (h: Harness) => Promise<void>) {
  for (const [kind, make] of Object.entries(kinds)) {
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

/** A promise resolved from outside: the tests' only synchronisation. */
const latch = <T = void>() => Promise.withResolvers<T>();

const opts = { limit: 5, ttlMs: 10_000 };

contract("200 parallel acquires of a 5-slot lease grant exactly 5", async ({ store }) => {
  const results = await Promise.all(
    Array.from({ length: 200 }, () => store.acquire("user-1", opts)),
  );
  const granted = results.filter((r) => r.ok);
  assertEquals(granted.length, 5);
  for (const r of results) if (!r.ok) assertEquals(r.retryAfterMs, opts.ttlMs);
  // Another key is untouched.
  assert((await store.acquire("user-2", opts)).ok);
});

contract("release frees a slot; releasing twice frees only one", async ({ store }) => {
  const o = { limit: 2, ttlMs: 10_000 };
  const a = await store.acquire("k", o);
  const b = await store.acquire("k", o);
  assert(a.ok && b.ok);
  assert(!(await store.acquire("k", o)).ok);
  await a.lease.release();
  await a.lease.release(); // harmless: must not free b's slot
  const c = await store.acquire("k", o);
  assert(c.ok, "the released slot is free again");
  assert(!(await store.acquire("k", o)).ok, "b and c still hold both slots");
  await b.lease.release();
  await c.lease.release();
});

contract("an expired lease frees its slot by itself", async ({ store, advance }) => {
  const o = { limit: 1, ttlMs: 5_000 };
  assert((await store.acquire("k", o)).ok);
  advance(4_999);
  const early = await store.acquire("k", o);
  assert(!early.ok);
  assertEquals(early.retryAfterMs, 1);
  advance(1);
  assert((await store.acquire("k", o)).ok, "the abandoned lease expired at ttlMs");
});

contract("retryAfterMs is the earliest expiry", async ({ store, advance }) => {
  const o = { limit: 2, ttlMs: 1_000 };
  assert((await store.acquire("k", o)).ok);
  advance(300);
  assert((await store.acquire("k", o)).ok);
  const full = await store.acquire("k", o);
  assert(!full.ok);
  assertEquals(full.retryAfterMs, 700);
  advance(100);
  const later = await store.acquire("k", o);
  assert(!later.ok);
  assertEquals(later.retryAfterMs, 600);
  advance(600); // the first expired: one slot, and now the second lease is the earliest
  assert((await store.acquire("k", o)).ok);
  const next = await store.acquire("k", o);
  assert(!next.ok);
  assertEquals(next.retryAfterMs, 300);
});

/** A slot policy for withSlot tests; its slots live under `t:<key>`. */
const slot = (limit: number, ttlMs: number): SlotPolicy => ({
  name: "t",
  limit,
  ttlMs,
  failOpen: false,
  decisionMs: 1000,
});

contract("withSlot releases after success, throw and abort", async ({ store }) => {
  const o = { limit: 1, ttlMs: 10_000 };
  assertEquals(
    await withSlot(store, slot(1, 10_000), "k", undefined, () => Promise.resolve(42)),
    42,
  );

  await assertRejects(
    () => withSlot(store, slot(1, 10_000), "k", undefined, () => Promise.reject(new Error("boom"))),
    /boom/,
  );

  const controller = new AbortController();
  const started = latch();
  const never = new Promise<never>(() => {}); // ignores its signal on purpose
  const run = withSlot(store, slot(1, 10_000), "k", controller.signal, () => {
    started.resolve();
    return never;
  });
  await started.promise;
  const busy = await store.acquire("t:k", o);
  assert(!busy.ok, "held while fn runs");
  controller.abort(new Error("client went away"));
  await assertRejects(() => run, /client went away/);

  const after = await store.acquire("t:k", o);
  assert(after.ok, "free again after success, throw and abort");
  await after.lease.release();
});

contract("withSlot stops waiting and releases when fn outlives ttlMs", async ({ store }) => {
  // The lease would expire in Redis at ttlMs anyway; the release makes the slot free at once
  // (the store clock is not moved here). 30 ms of real time: the lease timer is a real timer.
  const o = { limit: 1, ttlMs: 30 };
  let aborted: unknown;
  const run = withSlot(store, slot(1, 30), "k", undefined, (signal) => {
    signal.addEventListener("abort", () => aborted = signal.reason);
    return new Promise<never>(() => {});
  });
  await assertRejects(() => run, /lease held longer than 30 ms/);
  assert(aborted instanceof DOMException && aborted.name === "TimeoutError", "fn was told");
  const after = await store.acquire("t:k", o);
  assert(after.ok);
  await after.lease.release();
});

contract("withSlot does not run fn when full: 429 naming the policy", async ({ store }) => {
  const o = { limit: 1, ttlMs: 10_000 };
  const held = await store.acquire("t:k", o);
  assert(held.ok);
  let ran = false;
  const err = await withSlot(
    store,
    slot(1, 10_000),
    "k",
    undefined,
    () => Promise.resolve(ran = true),
  ).catch((e) => e);
  assert(err instanceof ProblemError);
  assertEquals([err.status, err.options.extensions?.policy], [429, "t"]);
  assertEquals(err.options.headers?.["retry-after"], "10");
  assert(!ran);
  await held.lease.release();
});

/** A tiny app: `/hold` waits for `gate`, `/boom` throws, `/ok` answers at once. */
function appWith(policy: Partial<ConcurrencyPolicy> & { store: LeaseStore }) {
  const app = new Hono();
  let gate = latch();
  const entered = { next: latch() };
  app.onError((err, c) => problemResponse(c, toProblem(err)));
  app.use(
    concurrencyLimit({
      name: "recall",
      limit: 1,
      ttlMs: 10_000,
      key: (c) => c.req.header("x-user") ?? "anon",
      failOpen: false,
      ...policy,
    }),
  );
  app.get("/hold", async (c) => {
    entered.next.resolve();
    await gate.promise;
    return c.text("held");
  });
  app.get("/boom", () => {
    throw new ProblemError(500, "internal", "boom");
  });
  app.get("/ok", (c) => c.text("ok"));
  return {
    app,
    /** Resolves when a /hold handler has started. */
    entered: () => entered.next.promise,
    open() {
      gate.resolve();
      gate = latch();
      entered.next = latch();
    },
  };
}

const as = (user: string, signal?: AbortSignal) => ({ headers: { "x-user": user }, signal });

contract(
  "middleware: 429 with Retry-After when full, released on every path",
  async ({ store }) => {
    const t = appWith({ store });
    // Success path.
    const hold = t.app.request("/hold", as("u1"));
    await t.entered();
    const refused = await t.app.request("/ok", as("u1"));
    assertEquals(refused.status, 429);
    assertEquals(refused.headers.get("retry-after"), "10");
    assertEquals(refused.headers.get("content-type"), "application/problem+json");
    const body = await refused.json();
    assertEquals([body.code, body.policy], ["rate_limited", "recall"]);
    assertEquals((await t.app.request("/ok", as("u2"))).status, 200, "other users unaffected");
    t.open();
    assertEquals((await hold).status, 200);
    assertEquals((await t.app.request("/ok", as("u1"))).status, 200, "released after success");

    // Throw path.
    const boom = await t.app.request("/boom", as("u1"));
    assertEquals(boom.status, 500);
    await boom.body?.cancel();
    const afterThrow = await t.app.request("/ok", as("u1"));
    assertEquals(afterThrow.status, 200, "released after a throw");

    // Client abort: the handler is still stuck, the slot must come back anyway.
    const controller = new AbortController();
    const abandoned = t.app.request("/hold", as("u1", controller.signal));
    await t.entered();
    assertEquals((await t.app.request("/ok", as("u1"))).status, 429);
    controller.abort();
    const res = await abandoned;
    assertEquals(res.status, 504);
    await res.body?.cancel();
    assertEquals((await t.app.request("/ok", as("u1"))).status, 200, "released after abort");
    t.open(); // let the abandoned handler finish
  },
);

Deno.test("redis: acquire and release cost one HTTP request each", async () => {
  const fixture = await testRedis();
  const store = new RedisLeaseStore(fixture.redis, fixture.prefix);
  try {
    const warm = await store.acquire("warm", opts); // loads the script (EVALSHA→EVAL once)
    assert(warm.ok);
    await warm.lease.release();
    const count = () => fixture.bridge.stats.requests;
    let before = count();
    const got = await store.acquire("k", opts);
    assert(got.ok);
    assertEquals(count() - before, 1, "acquire");
    before = count();
    await got.lease.release();
    assertEquals(count() - before, 1, "release");
    before = count();
    await got.lease.release();
    assertEquals(count() - before, 0, "second release is free");
    const refusedOpts = { limit: 1, ttlMs: 10_000 };
    const a = await store.acquire("one", refusedOpts);
    before = count();
    assert(!(await store.acquire("one", refusedOpts)).ok);
    assertEquals(count() - before, 1, "a refusal is one request too");
    if (a.ok) await a.lease.release();
  } finally {
    await store.idle();
    await fixture.close();
  }
});

Deno.test("redis gone: decision within ~50 ms; fail-open lets through, fail-closed 503", async () => {
  const server = await startRedisServer(freePort());
  const fixture = await testRedis(server.url);
  const store = new RedisLeaseStore(fixture.redis, fixture.prefix);
  try {
    assert((await store.acquire("warm", opts)).ok, "reachable before we stop it");
    await server.stop();
    for (const failOpen of [true, false]) {
      const { app } = appWith({ store, failOpen });
      const start = performance.now();
      const res = await app.request("/ok", as("u1"));
      const ms = performance.now() - start;
      assert(ms < 250, `decided in ${ms.toFixed(0)} ms`);
      if (failOpen) assertEquals(await res.text(), "ok");
      else {
        assertEquals(res.status, 503);
        assertEquals(res.headers.get("retry-after"), "5");
        assertEquals((await res.json()).code, "unavailable");
      }
    }
  } finally {
    await store.idle();
    await fixture.close();
    await server.stop();
  }
});

Deno.test("a slow store decides by failOpen after decisionMs", async () => {
  // A store that never answers, to pin the timeout path without Redis.
  const stuck: LeaseStore = { acquire: () => new Promise(() => {}) };
  for (const failOpen of [true, false]) {
    const { app } = appWith({ store: stuck, failOpen, decisionMs: 10 });
    const res = await app.request("/ok", as("u1"));
    assertEquals(res.status, failOpen ? 200 : 503);
    await res.text();
  }
});

Deno.test("a grant that arrives after the decision is handed straight back", async () => {
  const fixture = await testRedis();
  const inner = new RedisLeaseStore(fixture.redis, `${fixture.prefix}lease:`);
  const gate = latch();
  const released = latch();
  const slow: LeaseStore = {
    async acquire(key, o) {
      await gate.promise;
      const r = await inner.acquire(key, o);
      if (!r.ok) return r;
      const lease = r.lease;
      return {
        ok: true,
        lease: { ...lease, release: () => lease.release().then(released.resolve) },
      };
    },
  };
  const { app } = appWith({ store: slow, failOpen: false, decisionMs: 10 });
  const res = await app.request("/ok", as("u1"));
  assertEquals(res.status, 503);
  await res.text();
  gate.resolve(); // Redis answers at last, with a grant nobody will use
  await released.promise;
  const after = await inner.acquire("recall:u1", { limit: 1, ttlMs: 10_000 });
  assert(after.ok, "the late lease was released");
  await after.lease.release();
  await inner.idle();
  await fixture.close();
});

Deno.test("KeyedSlots: at most limit holders per key in the isolate, freed on release", async () => {
  const slots = new KeyedSlots();
  const o = { limit: 2, ttlMs: 10_000 };
  const results = await Promise.all(Array.from({ length: 20 }, () => slots.acquire("u", o)));
  const granted = results.filter((r) => r.ok);
  assertEquals(granted.length, 2);
  for (const r of results) if (!r.ok) assertEquals(r.retryAfterMs, 1000);
  assert((await slots.acquire("v", o)).ok, "another key is untouched");
  const [a, b] = granted;
  await a.lease.release();
  await a.lease.release(); // harmless: must not free b's slot
  assertEquals(slots.held("u"), 1);
  const c = await slots.acquire("u", o);
  assert(c.ok);
  assert(!(await slots.acquire("u", o)).ok);
  await b.lease.release();
  if (c.ok) await c.lease.release();
  assertEquals(slots.held("u"), 0);
});
