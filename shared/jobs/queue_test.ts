/**
 * The queue and the worker pool against real Postgres: exactly-once draining by two
 * workers, the active-job guard under 50 racing enqueues, the backoff schedule and the dead
 * state, per-task timeouts, recovery of lost locks, release on teardown, metrics.
 */
import postgres from "postgres";
import { assert, assertEquals, assertMatch } from "../../scripts/testing/assert.ts";
import { DEMO_USER_ID, seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { enqueueReplyJobs } from "../domain/reply_jobs.ts";
import { metrics } from "../http/metrics.ts";
import { ProblemError } from "../http/problem.ts";
import { collectQueueDepth } from "./metrics.ts";
import { PermanentJobError, runWorkerPool } from "./pool.ts";
import { claimJobs, completeJobs, enqueue, failJob, recoverExpiredJobs } from "./queue.ts";

const personaId = "00000000-0000-4000-a000-000000000001";

/**
 * A seeded database: `db` is the test's own connection, `pool` the isolate's (`deps.db.sql`,
 * what functions pass to the queue), `demo` the demo user as a verified token gives it.
 */
async function setup() {
  const env = await functionTestEnv();
  await seed(env.db.sql, { users: 20, posts: 60, seed: 3 });
  const db = env.db.sql;
  return {
    env,
    db,
    pool: env.deps.db.sql,
    demo: await env.deps.auth.verifyAccessToken(await env.keys.mint(DEMO_USER_ID)),
    /** A published post no job targets yet. */
    async publishedPost(): Promise<string> {
      const [row] = await db`
        select id from posts where status = 'published' and id::text not in (select payload->>'post_id' from jobs where payload ? 'post_id')
        order by id limit 1`;
      return row.id;
    },
    close: () => env.close(),
  };
}

const it = suite("jobs queue", setup);

it("two workers drain 1,000 jobs: each runs exactly once", async ({ env, db }) => {
  await db`insert into jobs (job_type, payload)
    select 'count', jsonb_build_object('n', g) from generate_series(1, 1000) g`;
  const runs = new Map<string, number>();
  const handler = async (job: { id: string }) => {
    runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
    await Promise.resolve();
  };
  // Two workers with their own connections, as two processes would have.
  const clients = [postgres(env.db.url, { max: 4 }), postgres(env.db.url, { max: 4 })];
  try {
    const summaries = await Promise.all(clients.map((client, i) =>
      runWorkerPool({
        workerId: `drain-${i}`,
        concurrency: 4,
        handlers: { count: handler },
        taskTimeoutMs: 5000,
        db: client,
      })
    ));
    assertEquals(runs.size, 1000);
    assert([...runs.values()].every((n) => n === 1), "a job ran more than once");
    assertEquals(summaries[0].claimed + summaries[1].claimed, 1000);
    assertEquals(summaries[0].done + summaries[1].done, 1000);
    assert(summaries.every((s) => s.claimed > 0), "both workers should have taken jobs");
    const [{ done }] = await db`
      select count(*)::int as done from jobs where job_type = 'count' and status = 'done' and attempts = 1`;
    assertEquals(done, 1000);
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
});

it("50 parallel identical enqueues → one active job", async ({ env, db, demo, publishedPost }) => {
  const postId = await publishedPost();
  const results = await Promise.all(
    Array.from({ length: 50 }, () => enqueueReplyJobs(env.deps.db, demo, postId, [personaId])),
  );
  const ids = new Set(results.map((r) => r.jobs[0].job_id));
  assertEquals(ids.size, 1);
  assertEquals(results.filter((r) => r.jobs[0].state === "created").length, 1);
  assertEquals(results.filter((r) => r.jobs[0].state === "active").length, 49);
  const [{ n }] = await db`
    select count(*)::int as n from jobs
    where payload->>'post_id' = ${postId} and payload->>'persona_id' = ${personaId}`;
  assertEquals(n, 1);
});

it("enqueueReplyJobs: a reply already written → no job; bad input → 404 / 400", async ({ env, db, demo, publishedPost }) => {
  const postId = await publishedPost();
  await db`insert into replies (post_id, persona_id, body) values (${postId}, ${personaId}, 'hi')`;
  const other = "00000000-0000-4000-a000-000000000002";
  const result = await enqueueReplyJobs(env.deps.db, demo, postId, [personaId, other, other]);
  assertEquals(result.jobs.map((j) => [j.persona_id, j.state]), [
    [personaId, "replied"],
    [other, "created"],
  ]);
  const status = async (fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (err) {
      assert(err instanceof ProblemError, String(err));
      return err.status;
    }
    return 0;
  };
  assertEquals(
    await status(() => enqueueReplyJobs(env.deps.db, demo, crypto.randomUUID(), [other])),
    404,
  );
  assertEquals(await status(() => enqueueReplyJobs(env.deps.db, demo, "not-a-uuid", [other])), 404);
  assertEquals(
    await status(() => enqueueReplyJobs(env.deps.db, demo, postId, [crypto.randomUUID()])),
    400,
  );
  assertEquals(await status(() => enqueueReplyJobs(env.deps.db, demo, postId, ["x"])), 400);
  assertEquals(await status(() => enqueueReplyJobs(env.deps.db, demo, postId, [])), 400);
  const six = Array.from({ length: 6 }, () => crypto.randomUUID());
  assertEquals(await status(() => enqueueReplyJobs(env.deps.db, demo, postId, six)), 400);
  // Not visible to the caller: somebody's draft.
  const [draft] = await db`
    insert into posts (author_id, body, status)
    select id, 'draft', 'draft' from profiles where id <> ${DEMO_USER_ID} limit 1 returning id`;
  assertEquals(await status(() => enqueueReplyJobs(env.deps.db, demo, draft.id, [other])), 404);
});

it("job keys: one active job per key; a finished one frees the key", async ({ db, pool }) => {
  const first = await enqueue({ type: "keyed", jobKey: "keyed:1", payload: { n: 1 } }, pool);
  const again = await enqueue({ type: "keyed", jobKey: "keyed:1", payload: { n: 2 } }, pool);
  assertEquals(first.created, true);
  assertEquals(again, { id: first.id, status: "pending", created: false });
  await db`update jobs set status = 'done', finished_at = now() where id = ${first.id}`;
  const next = await enqueue({ type: "keyed", jobKey: "keyed:1" }, pool);
  assertEquals(next.created, true);
  assert(next.id !== first.id);
  await db`update jobs set status = 'done', finished_at = now() where id = ${next.id}`;
});

it("dedupe keys: one job per key, ever", async ({ db, pool }) => {
  const first = await enqueue({ type: "once", dedupeKey: "once:1" }, pool);
  const again = await enqueue({ type: "once", dedupeKey: "once:1" }, pool);
  assertEquals(first.created, true);
  assertEquals(again, { id: first.id, status: "pending", created: false });
  const { id } = await enqueue({ type: "payload", payload: { a: 1, b: ["x"] } }, pool);
  const [row] = await db`select jsonb_typeof(payload) as t, payload from jobs where id = ${id}`;
  assertEquals([row.t, row.payload], ["object", { a: 1, b: ["x"] }]);
});

it("backoff: 30 s doubling (±20% jitter), then dead after max attempts", async ({ db, pool }) => {
  const { id } = await enqueue({ type: "flaky", maxAttempts: 6 }, pool);
  const expectedBase = [30, 60, 120, 240, 480];
  for (let attempt = 1; attempt <= 6; attempt++) {
    const [job] = await claimJobs("w-backoff", 1, ["flaky"], pool);
    assertEquals(job?.id, id);
    assertEquals(job.attempts, attempt);
    const outcome = await failJob(id, "w-backoff", `boom ${attempt}`, {}, pool);
    assert(outcome);
    if (attempt < 6) {
      const base = expectedBase[attempt - 1];
      assertEquals(outcome.status, "failed");
      assert(
        outcome.delay_s >= base * 0.8 - 0.01 && outcome.delay_s <= base * 1.2 + 0.01,
        `attempt ${attempt}: ${outcome.delay_s} s not within ${base} s ±20%`,
      );
      // Not runnable before its time…
      assertEquals((await claimJobs("w-backoff", 1, ["flaky"], pool)).length, 0);
      // …and runnable once it has come (time travel for the test).
      await db`update jobs set available_at = now() where id = ${id}`;
    } else {
      assertEquals(outcome.status, "dead");
    }
  }
  const [row] =
    await db`select status, attempts, last_error, finished_at from jobs where id = ${id}`;
  assertEquals([row.status, row.attempts, row.last_error], ["dead", 6, "boom 6"]);
  assert(row.finished_at);
  assertEquals((await claimJobs("w-backoff", 1, ["flaky"], pool)).length, 0);
  // The cap: 10 min from the 6th failed attempt on.
  const [{ capped }] = await db`select public.job_backoff_base_s(9) as capped`;
  assertEquals(capped, 600);
});

it("the pool retries a throwing handler, kills a permanent failure, times out a hung one", async ({ db, pool }) => {
  const retry = await enqueue({ type: "throws" }, pool);
  const dead = await enqueue({ type: "permanent" }, pool);
  const hung = await enqueue({ type: "hangs" }, pool);
  const start = performance.now();
  const summary = await runWorkerPool({
    workerId: "w-fail",
    concurrency: 3,
    taskTimeoutMs: 300,
    db: pool,
    handlers: {
      throws: () => Promise.reject(new Error("upstream said no")),
      permanent: () => Promise.reject(new PermanentJobError("bad payload")),
      hangs: () => new Promise(() => {}), // ignores its signal: the pool stops waiting anyway
    },
  });
  assert(performance.now() - start < 2000, "the hung handler held the pool");
  assertEquals([summary.claimed, summary.failed, summary.retried, summary.dead], [3, 3, 2, 1]);
  const rows = await db`select id, status, last_error from jobs where id in ${
    db([retry.id, dead.id, hung.id])
  }`;
  const byId = new Map(rows.map((r) => [r.id, r]));
  assertEquals(byId.get(retry.id)!.status, "failed");
  assertMatch(byId.get(retry.id)!.last_error, /upstream said no/);
  assertEquals(byId.get(dead.id)!.status, "dead");
  assertEquals(byId.get(hung.id)!.status, "failed");
  assertMatch(byId.get(hung.id)!.last_error, /TimeoutError: the job exceeded its 300 ms timeout/);
  assert(metrics.value("jobs_retried_total", { job_type: "throws" }) >= 1);
  assert(metrics.value("jobs_failed_total", { job_type: "permanent" }) >= 1);
});

it("a lost worker's job is recovered after its lock timeout; the stale worker can't complete it", async ({ db, pool }) => {
  const { id } = await enqueue({ type: "lost", lockTimeoutS: 5 }, pool);
  const [job] = await claimJobs("ghost", 1, ["lost"], pool);
  assertEquals(job.id, id);
  assertEquals(await recoverExpiredJobs(pool), 0); // the lock is young: the ghost may be alive
  await db`update jobs set locked_at = now() - interval '6 seconds' where id = ${id}`;
  assertEquals(await recoverExpiredJobs(pool), 1);
  const [row] = await db`select status, attempts, last_error from jobs where id = ${id}`;
  assertEquals([row.status, row.attempts], ["failed", 1]);
  assertMatch(row.last_error, /lock expired after 5 s: worker ghost was lost/);
  assertEquals(await completeJobs([id], "ghost", pool), 0);
  const [again] = await claimJobs("heir", 1, ["lost"], pool);
  assertEquals([again.id, again.attempts], [id, 2]);
  assertEquals(await completeJobs([id], "heir", pool), 1);
});

it("torn down mid-task: the job is released (runnable, attempt not counted)", async ({ db, pool }) => {
  const { id } = await enqueue({ type: "long" }, pool);
  const abort = new AbortController();
  let started!: () => void;
  const running = new Promise<void>((resolve) => (started = resolve));
  const run = runWorkerPool({
    workerId: "w-release",
    concurrency: 1,
    taskTimeoutMs: 10_000,
    abort: abort.signal,
    db: pool,
    handlers: {
      long: (_job, { signal }) => {
        started();
        return new Promise((_, reject) =>
          signal.addEventListener("abort", () => reject(signal.reason))
        );
      },
    },
  });
  await running;
  abort.abort();
  const summary = await run;
  assertEquals([summary.claimed, summary.released, summary.failed], [1, 1, 0]);
  const [row] = await db`select status, attempts, locked_by from jobs where id = ${id}`;
  assertEquals([row.status, row.attempts, row.locked_by], ["pending", 0, null]);
});

it("queue_depth by job type and status is exported, zeros for the registered types", async ({ env, db }) => {
  collectQueueDepth(env.deps.db, ["depth_probe", "depth_idle"]);
  await db`insert into jobs (job_type) select 'depth_probe' from generate_series(1, 7)`;
  const text = await metrics.render();
  assertMatch(text, /queue_depth\{job_type="depth_probe",status="pending"\} 7/);
  assertMatch(text, /queue_depth\{job_type="depth_idle",status="failed"\} 0/);
  assertMatch(text, /# TYPE job_duration_ms histogram/);
  assertMatch(text, /jobs_processed_total\{job_type="count",outcome="done"\} 1000/);
});

it("the API roles cannot touch the queue", async ({ db }) => {
  for (const role of ["anon", "authenticated"]) {
    const error = await db.begin(async (tx) => {
      await tx`select set_config('role', ${role}, true)`;
      await tx`select * from public.claim_jobs('x', 1)`;
    }).then(() => null, (err) => String(err));
    assertMatch(error ?? "", /permission denied/);
  }
});
