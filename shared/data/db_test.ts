import { createApp as createHealth } from "../../functions/health/app.ts";
import { createApp as createPosts } from "../../functions/posts/app.ts";
import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { DEMO_USER_ID, seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { settleBackground } from "../http/background.ts";
import { Budget } from "../http/budget.ts";
import { createFunctionApp } from "../http/app.ts";

const lockKey = 4242;

/** Resolves once `check()` is true, polling the database state; fails after `ms`. */
async function eventually(check: () => Promise<boolean>, ms: number, what: string) {
  const deadline = performance.now() + ms;
  while (!(await check())) {
    assert(performance.now() < deadline, `not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A pool of 4 (2 for searches) and a short request budget, so saturation is cheap to build;
 * `health` and `posts` on it; helpers that block the pool.
 */
async function setup() {
  const env = await functionTestEnv({
    env: { DB_POOL_MAX: "4", DB_SEARCH_SLOTS: "2", REQUEST_BUDGET_MS: "1500" },
  });
  await seed(env.db.sql, { users: 20, posts: 10, follows: 0, likes: 0, songs: 10, seed: 5 });
  await env.db.sql`create table public.db_test_marks (tag text not null)`;
  await env.db.sql`grant select, insert on public.db_test_marks to anon`;
  const { db } = env.deps;
  const postIds: string[] = (await env.db.sql`select id from posts limit 8`).map((r) => r.id);

  /**
   * Holds the advisory lock `lockKey` on a connection of the test's own, so every transaction
   * of the app's pool that asks for it blocks (a slow statement we can end when we want).
   */
  async function holdLock() {
    const conn = await env.db.sql.reserve();
    await conn`select pg_advisory_lock(${lockKey})`;
    let released: Promise<void> | undefined;
    return {
      conn,
      release() {
        released ??= (async () => {
          await conn`select pg_advisory_unlock(${lockKey})`;
          conn.release();
        })();
        return released;
      },
    };
  }

  return {
    env,
    db,
    health: createHealth(env.deps),
    posts: createPosts(env.deps),
    postIds,
    auth: { headers: { authorization: `Bearer ${await env.keys.mint(DEMO_USER_ID)}` } },
    holdLock,
    /** `n` app transactions (lane `lane`) that hold pool slots until the lock is released. */
    blockers(n: number, lane: "default" | "search" = "default") {
      return Array.from(
        { length: n },
        () =>
          db.asUser(null, (tx) => tx`select pg_advisory_xact_lock(${lockKey})`, undefined, {
            lane,
          }),
      );
    },
    /** Backends of the app's pool (application_name rockout-edge) running a statement now. */
    async activeAppStatements(): Promise<number> {
      const [row] = await env.db.sql`select count(*)::int as n from pg_stat_activity
        where datname = current_database() and application_name = 'rockout-edge'
          and state = 'active'`;
      return row.n;
    },
    async close() {
      await settleBackground();
      await env.close();
    },
  };
}

const it = suite("db", setup);

it("slow searches (time in the search lane) don't shrink the admission limit; slow ordinary requests do", async ({ env }) => {
  // An isolate of its own, whose admission limit has seen no other request: the default
  // admission settings with a floor of 8, and a pool of 8 with a small search lane of 2, so
  // a batch of 10 searches takes five rounds (up to 750 ms, far over the 100 ms target)
  // and a batch of 10 ordinary requests two.
  const deps = env.withEnv({
    DB_POOL_MAX: "8",
    DB_SEARCH_SLOTS: "2",
    MIN_IN_FLIGHT: "8",
    MAX_IN_FLIGHT: "512",
    ADMISSION_TARGET_MS: "100",
  });
  const { admission, db } = deps;
  const app = createFunctionApp("lanes", deps);
  for (const lane of ["search", "default"] as const) {
    app.get(`/${lane}`, async (c) => {
      // 20 ms of the request's own (so a window's p90 isn't a 1 ms figure, all noise), then
      // 150 ms in the database, over the 100 ms latency target, in a lane of the pool
      await new Promise((r) => setTimeout(r, 20));
      await db.asUser(null, (tx) => tx`select pg_sleep(0.15)`, c.get("budget"), { lane });
      return c.text("ok");
    });
  }
  /** `batches` rounds of 10 concurrent requests (each round is one window of samples). */
  const run = async (lane: string, batches: number) => {
    for (let b = 0; b < batches; b++) {
      const answers = await Promise.all(
        Array.from({ length: 10 }, () => app.request(`/lanes/${lane}`)),
      );
      assertEquals(answers.map((r) => r.status), Array(10).fill(200));
    }
  };
  const initial = admission.limiter.limit;
  await run("search", 4); // 2 search slots: up to 750 ms per request, waiting included
  const afterSearches = admission.limiter.limit;
  // Gradient2 moves on any change of latency: allow for noise, not for the lane's 150-750 ms
  assert(afterSearches >= initial * 0.9, `searches shrank the limit: ${afterSearches}/${initial}`);
  assertEquals(admission.inFlight, 0);
  await run("default", 5); // 8 slots: up to 340 ms per request, waiting included
  const afterOrdinary = admission.limiter.limit;
  assert(afterOrdinary < initial * 0.8, `ordinary: ${afterOrdinary}/${initial}`);
});

it("a wait for a pool connection is abandoned at the budget, and its statement never runs", async ({ env, db, holdLock, blockers, activeAppStatements }) => {
  const lock = await holdLock();
  const held = blockers(4);
  await eventually(async () => (await activeAppStatements()) === 4, 3000, "4 blocked");
  const tag = crypto.randomUUID();
  const budget = new Budget(300);
  const start = performance.now();
  const err = await db.asUser(
    null,
    (tx) => tx`insert into public.db_test_marks (tag) values (${tag})`,
    budget,
  ).catch((e) => e);
  const waited = performance.now() - start;
  assert(err instanceof Error, `rejected: ${err}`);
  assertEquals((err as Error).name, "TimeoutError");
  assert(waited >= 250 && waited < 5000, `gave up after ${waited} ms`);
  assertEquals(db.gate.waiting, 0);
  await lock.release();
  await Promise.all(held);
  // Every slot is free again, and the abandoned insert never reached the database.
  await db.asUser(null, (tx) => tx`select 1`);
  const rows = await env.db.sql`select 1 from public.db_test_marks where tag = ${tag}`;
  assertEquals(rows.length, 0);
});

it("a statement whose client went away is cancelled in the database", async ({ db, holdLock, activeAppStatements }) => {
  const lock = await holdLock();
  try {
    const client = new AbortController();
    const budget = new Budget(10_000, client.signal); // far from expiring by itself
    const running = db.asUser(
      null,
      (tx) => tx`select pg_advisory_xact_lock(${lockKey})`,
      budget,
    ).catch((e) => e);
    await eventually(async () => (await activeAppStatements()) === 1, 3000, "statement running");
    const before = db.stats.cancelledStatements;
    const start = performance.now();
    client.abort();
    const err = await running;
    assertEquals(err?.code, "57014"); // canceling statement due to user request
    assert(performance.now() - start < 5000, "cancelled, lock still held");
    assert(db.stats.cancelledStatements > before);
    assertEquals(await activeAppStatements(), 0);
    assertEquals(db.gate.inUse.total, 0);
  } finally {
    await lock.release();
  }
});

it("a write whose request answered 504 never commits (a later statement outliving the budget is cancelled)", async ({ env, db, activeAppStatements }) => {
  const app = createFunctionApp("late-write", env.deps, { budgetMs: 1000 });
  const tag = crypto.randomUUID();
  let settled: Promise<unknown> = Promise.resolve();
  app.post("/write", async (c) => {
    // statement_timeout is set once, from the ~1000 ms left at the start: each sleep fits in
    // it, but together they run past the deadline, and the insert would come after the 504
    const run = db.asUser(null, async (tx) => {
      await tx`select pg_sleep(0.6)`;
      await tx`select pg_sleep(0.7)`;
      await tx`insert into public.db_test_marks (tag) values (${tag})`;
    }, c.get("budget"));
    settled = run.catch((e) => e);
    await run;
    return c.text("stored", 201);
  });
  const before = db.stats.cancelledStatements;
  const res = await app.request("/late-write/write", { method: "POST" });
  assertEquals(res.status, 504, await res.clone().text());
  const err = await settled; // the transaction has ended, one way or the other
  assert(err instanceof Error, `the transaction must fail: ${err}`);
  assertEquals(db.gate.inUse.total, 0);
  assertEquals(await activeAppStatements(), 0);
  assert(db.stats.cancelledStatements > before, "the running sleep was cancelled");
  const rows = await env.db.sql`select 1 from public.db_test_marks where tag = ${tag}`;
  assertEquals(rows.length, 0, "a write the client was told failed landed");
});

it("work that finishes after the deadline rolls back; statements issued after it are never sent", async ({ env, db }) => {
  const tag = crypto.randomUUID();
  const budget = new Budget(300);
  let issuedLate: unknown = null;
  const err = await db.asUser(null, async (tx) => {
    await tx`insert into public.db_test_marks (tag) values (${tag})`;
    // the request's time runs out outside the database (an upstream call, say)
    await new Promise((resolve) => setTimeout(resolve, 400));
    try {
      tx`insert into public.db_test_marks (tag) values (${tag + "-late"})`;
    } catch (e) {
      issuedLate = e;
    }
  }, budget).catch((e) => e);
  assert(err instanceof Error, `must not commit: ${err}`);
  assertEquals((err as Error).name, "TimeoutError");
  assertEquals((issuedLate as Error)?.name, "TimeoutError");
  const rows = await env.db.sql`select 1 from public.db_test_marks where tag like ${tag + "%"}`;
  assertEquals(rows.length, 0);
  assertEquals(db.gate.inUse.total, 0);
});

it("a statement running at the deadline is cancelled, nothing is left running, the slot is freed", async ({ db, holdLock, activeAppStatements }) => {
  const lock = await holdLock();
  try {
    const before = db.stats.cancelledStatements;
    // statement_timeout (~600 ms from the start) would end the lock wait only at ~900 ms
    const err = await db.asUser(null, async (tx) => {
      await tx`select pg_sleep(0.3)`;
      await tx`select pg_advisory_xact_lock(${lockKey})`;
    }, new Budget(600)).catch((e) => e);
    assertEquals(err?.code, "57014");
    assert(/user request/.test(err?.message), `cancelled by us, not by a timeout: ${err}`);
    assert(db.stats.cancelledStatements > before);
    // the lock is still held: a statement not cancelled would still be waiting on it
    assertEquals(await activeAppStatements(), 0);
    assertEquals(db.gate.inUse.total, 0);
    const ok = await db.asUser(null, (tx) => tx`select 1 as one`, new Budget(1000));
    assertEquals(ok[0].one, 1);
  } finally {
    await lock.release();
  }
});

it("requests that answered 504 leave nothing running or queued in the database", async ({ env, db, posts, postIds, auth, activeAppStatements }) => {
  const locker = await env.db.sql.reserve();
  await locker`begin`;
  await locker`lock table public.posts in access exclusive mode`;
  try {
    // Twice the pool: 4 block on the lock, 4 wait for a connection.
    const answers = await Promise.all(
      postIds.map((id) => posts.request(`/posts/${id}`, auth)), // distinct: no coalescing
    );
    assertEquals(answers.map((r) => r.status), Array(8).fill(504));
    // The lock is still held: whatever still ran or started now would be stuck on it.
    await eventually(async () => (await activeAppStatements()) === 0, 5000, "all cancelled");
    await eventually(() => Promise.resolve(db.gate.inUse.total === 0), 5000, "slots freed");
    assertEquals(db.gate.waiting, 0);
    assertEquals(await activeAppStatements(), 0);
  } finally {
    await locker`rollback`;
    locker.release();
  }
  const ok = await posts.request(`/posts/${postIds[0]}`, auth);
  assertEquals(ok.status, 200, await ok.clone().text());
});

it("/health stays 200 while the pool is saturated and connections are queued", async ({ db, health, holdLock, blockers, activeAppStatements }) => {
  const lock = await holdLock();
  const held = blockers(8); // 4 hold every connection, 4 more wait
  try {
    await eventually(async () => (await activeAppStatements()) === 4, 3000, "pool saturated");
    assertEquals(db.gate.waiting, 4);
    const res = await health.request("/health");
    const body = await res.json();
    assertEquals(res.status, 200, JSON.stringify(body)); // 503 if the db check had failed
    assertEquals(body.status, "ok");
  } finally {
    await lock.release();
    await Promise.all(held);
  }
});

it("searches hold at most DB_SEARCH_SLOTS connections: other reads still get one", async ({ db, holdLock, blockers, activeAppStatements }) => {
  const lock = await holdLock();
  const searches = blockers(4, "search"); // 2 run (blocked), 2 wait for the search lane
  try {
    await eventually(async () => (await activeAppStatements()) === 2, 3000, "2 searches run");
    assertEquals(db.gate.inUse, { total: 2, search: 2 });
    const budget = new Budget(1000);
    const rows = await db.asUser(null, (tx) => tx`select count(*)::int as n from posts`, budget);
    assert(rows[0].n > 0);
  } finally {
    await lock.release();
    await Promise.all(searches);
  }
});

it("a search waits at most maxWaitMs for its lane, then 503 with Retry-After; nothing runs", async ({ env, db, holdLock, blockers, activeAppStatements }) => {
  const lock = await holdLock();
  const searches = blockers(2, "search"); // the search lane is full
  try {
    await eventually(async () => (await activeAppStatements()) === 2, 3000, "lane full");
    const tag = crypto.randomUUID();
    const start = performance.now();
    const err = await db.asUser(
      null,
      (tx) => tx`insert into public.db_test_marks (tag) values (${tag})`,
      new Budget(1500),
      { lane: "search", maxWaitMs: 100 },
    ).catch((e) => e);
    const waited = performance.now() - start;
    assertEquals(err?.status, 503);
    assertEquals(err?.options?.headers?.["retry-after"], "1");
    assert(waited >= 90 && waited < 5000, `gave up after ${waited} ms`);
    assertEquals(db.gate.waiting, 0);
    await lock.release();
    await Promise.all(searches);
    const rows = await env.db.sql`select 1 from public.db_test_marks where tag = ${tag}`;
    assertEquals(rows.length, 0);
  } finally {
    await lock.release(); // idempotent
    await Promise.all(searches);
  }
});

it("a one-statement write that finishes while the isolate is busy past the deadline never commits", async ({ env, db }) => {
  const tag = crypto.randomUUID();
  // The insert ends on the server at ~150 ms; its answer is read only after a 400 ms stall
  // of the event loop (a loaded isolate), by when the 300 ms budget is spent.
  setTimeout(() => {
    const until = performance.now() + 400;
    while (performance.now() < until) { /* the isolate is busy */ }
  }, 50);
  const err = await db.asUser(
    null,
    (tx) => tx`insert into public.db_test_marks (tag) select ${tag} from pg_sleep(0.15)`,
    new Budget(300),
  ).catch((e) => e);
  assertEquals((err as Error)?.name, "TimeoutError", String(err));
  const rows = await env.db.sql`select 1 from public.db_test_marks where tag = ${tag}`;
  assertEquals(rows.length, 0, "a write the client was told failed landed");
  assertEquals(db.gate.inUse.total, 0);
});

it("a statement error that the work catches fails the transaction: nothing commits, asUser rejects", async ({ env, db }) => {
  const tag = crypto.randomUUID();
  const err = await db.asUser(null, async (tx) => {
    await tx`insert into public.db_test_marks (tag) values (${tag})`;
    try {
      await tx`select 1/0`;
    } catch { /* swallowed, e.g. "ignore a duplicate" */ }
    return "stored";
  }).catch((e) => e);
  assert(err instanceof Error, `must reject, got ${JSON.stringify(err)}`);
  const rows = await env.db.sql`select 1 from public.db_test_marks where tag = ${tag}`;
  assertEquals(rows.length, 0);
  assertEquals(db.gate.inUse.total, 0);
});

for (const statements of [1, 2]) {
  it(`a connection lost during a ${statements}-statement transaction: it rejects, the slot is freed, the isolate lives on`, async ({ env, db }) => {
    const marker = `lost-${statements}-${crypto.randomUUID().slice(0, 8)}`;
    const running = db.asUser(null, async (tx) => {
      if (statements === 2) await tx`select 1`;
      return await tx`select pg_sleep(5), ${marker}::text as m`;
    }, new Budget(10_000)).catch((e) => e);
    // Ends the backend (as a failover or a pooler restart would) once it runs the statement.
    await eventually(
      async () => {
        const [row] = await env.db.sql`select count(pg_terminate_backend(pid))::int as n
        from pg_stat_activity where state = 'active' and pid <> pg_backend_pid()
          and query like ${"%" + "pg_sleep(5)%"} and datname = current_database()`;
        return row.n > 0;
      },
      3000,
      "the statement runs",
    );
    const err = await running;
    assert(err instanceof Error, `must reject, got ${JSON.stringify(err)}`);
    assertEquals(db.gate.inUse.total, 0);
    for (let i = 0; i < 4; i++) {
      const [row] = await db.asUser(null, (tx) => tx`select ${i}::int as i`, new Budget(3000));
      assertEquals(row.i, i);
    }
  });
}
