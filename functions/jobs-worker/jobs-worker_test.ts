/**
 * jobs-worker against real Postgres and Redis with the OpenAI fake: the secret-key route,
 * generate_reply (idempotent reply + notification, retries when the LLM fails), a worker
 * process killed mid-job (SIGKILL) whose job another worker re-runs after the lock timeout,
 * graceful SIGTERM (finish or release), digests scheduled once per user per day.
 */
import { assert, assertEquals, assertMatch } from "../../scripts/testing/assert.ts";
import { startOpenAIFake } from "../../scripts/testing/fakes/openai.ts";
import { DEMO_USER_ID, seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { Budget } from "../../shared/http/budget.ts";
import { replyJobKey } from "../../shared/domain/reply_jobs.ts";
import { runWorkerPool } from "../../shared/jobs/pool.ts";
import { claimJobs, enqueue, recoverExpiredJobs } from "../../shared/jobs/queue.ts";
import { createApp } from "./app.ts";
import { digestHandler, scheduleDigests } from "./handlers/digest.ts";
import { generateReplyHandler } from "./handlers/generate_reply.ts";
import { jobHandlers } from "./handlers/index.ts";

const secret = "sb_secret_test_0123456789abcdef";
const workerScript = new URL("../../scripts/dev/worker.ts", import.meta.url).pathname;

const personas = [
  "00000000-0000-4000-a000-000000000001",
  "00000000-0000-4000-a000-000000000002",
  "00000000-0000-4000-a000-000000000003",
];

/** A generate_reply job as shared/domain/reply_jobs.ts enqueues it. */
const replyJob = (postId: string, personaId: string) => ({
  type: "generate_reply",
  payload: { post_id: postId, persona_id: personaId },
  jobKey: replyJobKey(postId, personaId),
});

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const it = suite("jobs-worker", async () => {
  const fake = startOpenAIFake({
    chat: (req) => ({ reply: `a reply in the voice of ${req.messages[0].content.slice(0, 20)}` }),
  });
  const env = await functionTestEnv({
    env: {
      OPENAI_API_KEY: "test",
      OPENAI_BASE_URL: fake.baseUrl,
      SUPABASE_SECRET_KEYS: JSON.stringify({ default: secret }),
    },
  });
  await seed(env.db.sql, { users: 30, posts: 80, seed: 5 });
  const app = createApp(env.deps);
  const db = env.db.sql;

  /** A published post nobody has asked replies for yet. */
  async function freshPost(): Promise<{ id: string; author_id: string }> {
    const [row] = await db`
      select id, author_id from posts
      where status = 'published' and id::text not in (select payload->>'post_id' from jobs where payload ? 'post_id')
        and id not in (select post_id from replies)
      order by id limit 1`;
    return row as { id: string; author_id: string };
  }

  function run(headers: Record<string, string> = {}) {
    return app.request("/jobs-worker/run", { method: "POST", headers });
  }

  /** `scripts/dev/worker.ts` as a separate process, on this test's database, Redis and fake. */
  function spawnWorker(args: string[] = [], extraEnv: Record<string, string> = {}) {
    return new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", workerScript, "--concurrency", "1", "--poll-ms", "50", ...args],
      env: {
        DATABASE_URL: env.db.url,
        SUPABASE_JWKS: JSON.stringify(env.keys.jwks),
        UPSTASH_REDIS_REST_URL: env.bridge!.url,
        UPSTASH_REDIS_REST_TOKEN: env.bridge!.token,
        REDIS_PREFIX: env.redisPrefix,
        OPENAI_API_KEY: "test",
        OPENAI_BASE_URL: fake.baseUrl,
        ...extraEnv,
      },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  }

  return {
    env,
    fake,
    app,
    db,
    freshPost,
    run,
    spawnWorker,
    async close() {
      await fake.close();
      await env.close();
    },
  };
});

it("POST /run needs a secret key: missing, wrong or a user token → 401 problem+json", async ({ env, app, run }) => {
  const userToken = await env.keys.mint(DEMO_USER_ID);
  for (
    const headers of [
      {} as Record<string, string>,
      { apikey: "sb_secret_wrong" },
      { authorization: "Bearer sb_secret_wrong" },
      { authorization: `Bearer ${userToken}` },
    ]
  ) {
    const res = await run(headers);
    assertEquals(res.status, 401);
    assertEquals(res.headers.get("content-type"), "application/problem+json");
    assertEquals((await res.json()).code, "unauthorized");
  }
  assertEquals((await app.request("/jobs-worker/run")).status, 405);
});

it("POST /run drains generate_reply jobs: one reply each, the author notified, a summary", async ({ fake, db, freshPost, run }) => {
  const post = await freshPost();
  for (const personaId of personas) {
    await enqueue(replyJob(post.id, personaId), db);
  }
  const before = fake.chatCalls();
  const res = await run({ apikey: secret });
  assertEquals(res.status, 200, await res.clone().text());
  const summary = await res.json();
  assertEquals([summary.claimed, summary.done, summary.failed], [3, 3, 0]);
  assert(typeof summary.ms === "number");
  assertEquals(fake.chatCalls() - before, 3);
  const replies = await db`select persona_id, body from replies where post_id = ${post.id}`;
  assertEquals(replies.length, 3);
  assert(replies.every((r) => r.body.startsWith("a reply in the voice of")));
  const notes = await db`
    select kind, payload from notifications where user_id = ${post.author_id} and kind = 'persona_reply'
      and payload->>'post_id' = ${post.id}`;
  assertEquals(notes.length, 3);
  const [{ reply_count }] = await db`select reply_count from posts where id = ${post.id}`;
  assertEquals(reply_count, 3); // persona replies count through the replies triggers
  // Bearer form of the key works too (nothing left to do).
  const again = await run({ authorization: `Bearer ${secret}` });
  assertEquals((await again.json()).claimed, 0);
});

it("generate_reply run twice (even at once) writes one reply and one notification", async ({ env, fake, db, freshPost }) => {
  const post = await freshPost();
  const generateReply = generateReplyHandler(env.deps);
  const job = {
    id: crypto.randomUUID(),
    job_type: "generate_reply",
    payload: { post_id: post.id, persona_id: personas[0] },
  } as unknown as Parameters<typeof generateReply>[0];
  const ctx = () => {
    const budget = new Budget(10_000);
    return { budget, signal: budget.aborted, workerId: "test" };
  };
  await Promise.all([generateReply(job, ctx()), generateReply(job, ctx())]);
  const before = fake.chatCalls();
  await generateReply(job, ctx()); // a re-run after success: no LLM call at all
  assertEquals(fake.chatCalls(), before);
  const [{ n }] = await db`select count(*)::int as n from replies where post_id = ${post.id}`;
  assertEquals(n, 1);
  const [{ m }] = await db`
    select count(*)::int as m from notifications where payload->>'post_id' = ${post.id}`;
  assertEquals(m, 1);
});

it("LLM failing → the job fails with backoff and succeeds on a later run, never lost", async ({ fake, db, freshPost, run }) => {
  const post = await freshPost();
  const { id } = await enqueue(replyJob(post.id, personas[1]), db);
  fake.behave({ status: 500 }, "/v1/chat/completions");
  try {
    const res = await run({ apikey: secret });
    const summary = await res.json();
    assertEquals([summary.claimed, summary.retried, summary.dead], [1, 1, 0]);
  } finally {
    fake.behave({}, "/v1/chat/completions");
  }
  const [failed] = await db`
    select status, attempts, last_error, extract(epoch from available_at - now()) as wait_s
    from jobs where id = ${id}`;
  assertEquals([failed.status, failed.attempts], ["failed", 1]);
  assertMatch(failed.last_error, /500/);
  assert(Number(failed.wait_s) > 20 && Number(failed.wait_s) <= 36, `retry in ${failed.wait_s} s`);
  // Not retried early…
  assertEquals((await (await run({ apikey: secret })).json()).claimed, 0);
  // …and retried once due.
  await db`update jobs set available_at = now() where id = ${id}`;
  const later = await (await run({ apikey: secret })).json();
  assertEquals([later.claimed, later.done], [1, 1]);
  const [done] = await db`select status, attempts from jobs where id = ${id}`;
  assertEquals([done.status, done.attempts], ["done", 2]);
  const [{ n }] = await db`select count(*)::int as n from replies where post_id = ${post.id}`;
  assertEquals(n, 1);
});

it("a worker SIGKILLed mid-job: another worker re-runs the job after the lock timeout, one reply", async ({ env, fake, db, freshPost, spawnWorker }) => {
  const post = await freshPost();
  const { id } = await enqueue({
    ...replyJob(post.id, personas[2]),
    lockTimeoutS: 4,
  }, db);
  // "Blocked": longer than the child's 3 s task timeout, yet bounded (a fake hanging for a
  // killed process never learns it is gone, and would hold the fake's shutdown forever).
  fake.behave({ delayMs: 5000 }, "/v1/chat/completions");
  const before = fake.chatCalls();
  const child = spawnWorker();
  let claimedAt: number;
  try {
    await until("the child worker's LLM call", () => fake.chatCalls() > before, 20_000);
    claimedAt = Date.now();
  } finally {
    child.kill("SIGKILL");
    await child.output();
  }
  fake.behave({}, "/v1/chat/completions");
  const [held] = await db`select status, locked_by, attempts from jobs where id = ${id}`;
  assertEquals([held.status, held.attempts], ["processing", 1]);
  assertMatch(held.locked_by, /^local-/);
  // The lock is young: nobody may take the job yet.
  assertEquals(await recoverExpiredJobs(db), 0);
  assertEquals((await claimJobs("impatient", 5, null, db)).length, 0);

  const stop = new AbortController();
  const heir = runWorkerPool({
    workerId: "heir",
    concurrency: 2,
    handlers: jobHandlers(env.deps),
    taskTimeoutMs: 10_000,
    pollMs: 50,
    recoverEveryMs: 200,
    stop: stop.signal,
    db: env.deps.db.sql,
  });
  try {
    await until("the job to be re-run", async () => {
      const [row] = await db`select status from jobs where id = ${id}`;
      return row.status === "done";
    });
  } finally {
    stop.abort();
  }
  const summary = await heir;
  assert(Date.now() - claimedAt! >= 3500, "recovered before its lock timeout");
  assert(summary.recovered >= 1);
  const [row] = await db`select status, attempts from jobs where id = ${id}`;
  assertEquals([row.status, row.attempts], ["done", 2]);
  const [{ n }] = await db`
    select count(*)::int as n from replies where post_id = ${post.id} and persona_id = ${
    personas[2]
  }`;
  assertEquals(n, 1);
});

it("SIGTERM: a running job finishes within the grace period, then the worker exits", async ({ fake, db, freshPost, spawnWorker }) => {
  const post = await freshPost();
  const { id } = await enqueue(replyJob(post.id, personas[0]), db);
  fake.behave({ delayMs: 600 }, "/v1/chat/completions");
  const before = fake.chatCalls();
  const child = spawnWorker(["--grace-ms", "10000"]);
  try {
    await until("the child worker's LLM call", () => fake.chatCalls() > before, 20_000);
    child.kill("SIGTERM");
    const out = await child.output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    const stopped = new TextDecoder().decode(out.stdout).trim().split("\n").map((l) =>
      JSON.parse(l)
    ).find((l) => l.msg === "worker stopped");
    assertEquals([stopped.done, stopped.released], [1, 0]);
  } finally {
    fake.behave({}, "/v1/chat/completions");
  }
  const [row] = await db`select status from jobs where id = ${id}`;
  assertEquals(row.status, "done");
});

it("SIGTERM: a job still running after the grace period is released, not lost", async ({ fake, db, freshPost, spawnWorker }) => {
  const post = await freshPost();
  const { id } = await enqueue(replyJob(post.id, personas[1]), db);
  fake.behave({ delayMs: 3000 }, "/v1/chat/completions"); // outlasts the 200 ms grace
  const before = fake.chatCalls();
  const child = spawnWorker(["--grace-ms", "200"]);
  try {
    await until("the child worker's LLM call", () => fake.chatCalls() > before, 20_000);
    child.kill("SIGTERM");
    const out = await child.output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  } finally {
    fake.behave({}, "/v1/chat/completions");
  }
  const [row] = await db`select status, attempts, locked_by from jobs where id = ${id}`;
  assertEquals([row.status, row.attempts, row.locked_by], ["pending", 0, null]);
});

it("without OpenAI, workers leave generate_reply jobs pending instead of killing them", async ({ env, db, freshPost }) => {
  const post = await freshPost();
  const { id } = await enqueue(replyJob(post.id, personas[2]), db);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", workerScript, "--concurrency", "1", "--poll-ms", "50"],
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "",
      HOME: Deno.env.get("HOME") ?? "",
      ...(Deno.env.get("DENO_DIR") ? { DENO_DIR: Deno.env.get("DENO_DIR")! } : {}),
      DATABASE_URL: env.db.url,
      SUPABASE_JWKS: JSON.stringify(env.keys.jwks),
      LOG_REQUESTS: "false",
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("worker started")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  child.kill("SIGTERM");
  reader.releaseLock();
  await child.stdout.cancel().catch(() => {});
  await child.stderr.cancel().catch(() => {});
  await child.status;
  const started = JSON.parse(text.split("\n").find((l) => l.includes("worker started"))!);
  assertEquals(started.job_types, ["digest"]);
  const [row] = await db`select status, attempts from jobs where id = ${id}`;
  assertEquals([row.status, row.attempts], ["pending", 0]);
  await db`delete from jobs where id = ${id}`;
});

it("without Redis, a worker with OpenAI still runs generate_reply: the model's breaker fails open", async ({ env, fake, db, freshPost }) => {
  const post = await freshPost();
  const { id } = await enqueue(replyJob(post.id, personas[0]), db);
  const before = fake.chatCalls();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", workerScript, "--concurrency", "1", "--poll-ms", "50"],
    clearEnv: true, // no REDIS_URL / UPSTASH_* from this process
    env: {
      PATH: Deno.env.get("PATH") ?? "",
      HOME: Deno.env.get("HOME") ?? "",
      ...(Deno.env.get("DENO_DIR") ? { DENO_DIR: Deno.env.get("DENO_DIR")! } : {}),
      DATABASE_URL: env.db.url,
      OPENAI_API_KEY: "test",
      OPENAI_BASE_URL: fake.baseUrl,
      LOG_REQUESTS: "false",
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  try {
    await until("the job to be done", async () => {
      const [row] = await db`select status from jobs where id = ${id}`;
      return row.status === "done";
    }, 30_000);
  } finally {
    child.kill("SIGTERM");
  }
  const out = await output;
  const stderr = new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 0, stderr);
  assert(fake.chatCalls() > before); // (and any job an earlier test left pending)
  // The breaker's store (Redis) threw; the call was let through.
  assertMatch(stderr, /breaker store failed; call let through.*openai-chat/);
  const [{ n }] = await db`
    select count(*)::int as n from replies where post_id = ${post.id} and persona_id = ${
    personas[0]
  }`;
  assertEquals(n, 1);
});

it("digests: scheduled once per user per day, one notification each, idempotent", async ({ env, app, db, run }) => {
  const day = "2026-11-20";
  const [author] =
    await db`select id from profiles where id <> ${DEMO_USER_ID} order by id limit 1`;
  const [post] = await db`insert into posts (author_id, body) values (${author.id}, 'digest me')
    returning id`;
  await db`insert into likes (user_id, post_id, created_at)
    values (${DEMO_USER_ID}, ${post.id}, '2026-11-20 10:00:00+00')`;
  await db`insert into follows (follower_id, followee_id, created_at)
    values (${DEMO_USER_ID}, ${author.id}, '2026-11-20 11:00:00+00')
    on conflict (follower_id, followee_id) do update set created_at = excluded.created_at`;
  const first = await scheduleDigests(db, day);
  assert(first >= 1);
  assertEquals(await scheduleDigests(db, day), 0);
  const res = await app.request(`/jobs-worker/digests?day=${day}`, {
    method: "POST",
    headers: { apikey: secret },
  });
  assertEquals(res.status, 202);
  assertEquals(await res.json(), { day, scheduled: 0 });
  const bad = await app.request(`/jobs-worker/digests?day=2026-02-30`, {
    method: "POST",
    headers: { apikey: secret },
  });
  assertEquals(bad.status, 400);

  const summary = await (await run({ apikey: secret })).json();
  assert(summary.done >= first);
  const [{ open }] = await db`
    select count(*)::int as open from jobs where job_type = 'digest' and status <> 'done'`;
  assertEquals(open, 0);
  const notes = await db`
    select payload from notifications where user_id = ${author.id} and kind = 'digest'`;
  assertEquals(notes.length, 1);
  assertEquals(notes[0].payload.day, day);
  assert(notes[0].payload.new_likes >= 1 && notes[0].payload.new_followers >= 1);
  // The handler running again (a retry after a lost lock) adds nothing.
  const [job] = await db`select * from jobs where dedupe_key = ${`digest:${author.id}:${day}`}`;
  const budget = new Budget(5000);
  const sendDigest = digestHandler(env.deps.db);
  await sendDigest(job as Parameters<typeof sendDigest>[0], {
    budget,
    signal: budget.aborted,
    workerId: "test",
  });
  const [{ n }] = await db`
    select count(*)::int as n from notifications where user_id = ${author.id} and kind = 'digest'`;
  assertEquals(n, 1);
});

it("GET /metrics (secret key) exports queue depth and job counters", async ({ app }) => {
  assertEquals((await app.request("/jobs-worker/metrics")).status, 401);
  const res = await app.request("/jobs-worker/metrics", { headers: { apikey: secret } });
  assertEquals(res.status, 200);
  const text = await res.text();
  assertMatch(text, /jobs_processed_total\{job_type="generate_reply",outcome="done"\}/);
  assertMatch(text, /jobs_retried_total\{job_type="generate_reply"\} 1/);
  assertMatch(text, /job_duration_ms_count\{job_type="generate_reply"\}/);
});
