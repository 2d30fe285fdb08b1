import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { startOpenAIFake } from "../../scripts/testing/fakes/openai.ts";
import { DEMO_USER_ID, seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { dbStatements, suite } from "../../scripts/testing/test_http.ts";
import { settleBackground } from "../../shared/http/background.ts";
import { metrics } from "../../shared/http/metrics.ts";
import { createApp } from "./app.ts";
import { forgetSummary } from "./summary.ts";

/** A fake OpenAI, 120 posts by 40 users, and the app calling the fake. */
async function setup() {
  let answers = 0;
  const fake = startOpenAIFake({
    chat: () => ({ summary: `LLM summary ${++answers}` }),
    usage: { prompt_tokens: 300, completion_tokens: 50 },
  });
  const env = await functionTestEnv({
    env: {
      OPENAI_API_KEY: "test",
      OPENAI_BASE_URL: fake.baseUrl,
      SUMMARY_MAX_REPLIES: "50",
      SUMMARY_MAX_INPUT_CHARS: "3000",
    },
  });
  await seed(env.db.sql, { users: 40, posts: 120, seed: 3 });
  const app = createApp(env.deps);
  const demoToken = await env.keys.mint(DEMO_USER_ID);
  const profiles = await env.db.sql`select id from profiles order by id`;
  const userIds: string[] = profiles.map((r) => r.id);
  const published: string[] = (await env.db.sql`
    select id from posts where status = 'published' order by id`).map((r) => r.id);
  const close = async () => {
    await settleBackground();
    await fake.close();
    await env.close();
  };
  return { env, fake, app, demoToken, userIds, published, close };
}
type Fixture = Awaited<ReturnType<typeof setup>>;
const it = suite("thread-summary", setup);

interface View {
  post: { id: string; reply_count: number };
  replies: { items: { id: string; body: string }[]; next_cursor: string | null };
  summary: { text: string; source: string; model?: string; generated_at: string; stale: boolean };
}

async function read(
  { app, demoToken }: Fixture,
  postId: string,
  query = "",
  token = demoToken,
): Promise<Response> {
  return await app.request(`/thread-summary/${postId}${query}`, {
    headers: { authorization: `Bearer ${token}` },
  });
}

async function view(f: Fixture, postId: string): Promise<View> {
  const res = await read(f, postId);
  assertEquals(res.status, 200, await res.clone().text());
  return await res.json();
}

/** `n` concurrent readers (different users: one user's in-flight requests are capped); 200s. */
async function readConcurrently(f: Fixture, postId: string, n = 50): Promise<View[]> {
  const tokens = await Promise.all(f.userIds.slice(0, n).map((id) => f.env.keys.mint(id)));
  const responses = await Promise.all(
    Array.from({ length: n }, (_, i) => read(f, postId, "", tokens[i % tokens.length])),
  );
  for (const res of responses) assertEquals(res.status, 200, await res.clone().text());
  return await Promise.all(responses.map((r) => r.json()));
}

async function addReplies({ env, userIds }: Fixture, postId: string, n: number, prefix = "reply") {
  await env.db.sql`
    insert into replies (post_id, author_id, body)
    select ${postId}, ${userIds[5]}, ${prefix} || ' ' || g from generate_series(1, ${n}) g`;
}

it("a thread without replies says so, without calling the LLM", async (f) => {
  const postId = f.published[0];
  await f.env.db.sql`delete from replies where post_id = ${postId}`;
  const before = f.fake.chatCalls();
  const v = await view(f, postId);
  assertEquals(v.summary.text, "No replies yet.");
  assertEquals(v.summary.stale, false);
  await settleBackground();
  assertEquals(f.fake.chatCalls(), before);
});

it("50 concurrent reads of a changed thread: one LLM call; then none while unchanged", async (f) => {
  const postId = f.published[1];
  await addReplies(f, postId, 12);
  // The model answers only once the 50 reads are done (a gate, not a guess at its latency).
  const modelGate = Promise.withResolvers<void>();
  f.fake.behave({ until: modelGate.promise }, "/v1/chat/completions");
  const before = f.fake.chatCalls();
  const first = await readConcurrently(f, postId).finally(modelGate.resolve);
  // built from the current replies while the LLM one is made: not stale
  assert(first.every((v) => !v.summary.stale && v.summary.source === "extractive"));
  await settleBackground();
  assertEquals(f.fake.chatCalls() - before, 1);

  const fresh = await view(f, postId);
  assertEquals(fresh.summary.source, "llm");
  assertEquals(fresh.summary.stale, false);
  assertEquals(fresh.summary.model, "gpt-4o-mini");
  assertMatchText(fresh.summary.text, /^LLM summary \d+$/);

  const again = await readConcurrently(f, postId);
  assert(again.every((v) => !v.summary.stale && v.summary.text === fresh.summary.text));
  await settleBackground();
  assertEquals(f.fake.chatCalls() - before, 1);

  // a new reply: everybody keeps the previous summary, marked stale, and one call follows
  await addReplies(f, postId, 1, "newest");
  const changedGate = Promise.withResolvers<void>();
  f.fake.behave({ until: changedGate.promise }, "/v1/chat/completions");
  const changed = await readConcurrently(f, postId).finally(changedGate.resolve);
  assert(changed.every((v) => v.summary.stale && v.summary.text === fresh.summary.text));
  await settleBackground();
  assertEquals(f.fake.chatCalls() - before, 2);
  const updated = await view(f, postId);
  assertEquals(updated.summary.stale, false);
  assert(updated.summary.text !== fresh.summary.text, "regenerated");

  const [row] = await f.env.db.sql`
    select llm_calls, prompt_tokens, completion_tokens from thread_summaries where post_id = ${postId}`;
  assertEquals(row.llm_calls, 2);
  assertEquals(Number(row.prompt_tokens), 600);
  assertEquals(Number(row.completion_tokens), 100);
  f.fake.behave({}, "/v1/chat/completions");
});

it("a summary built from the current replies is not stale; one older than them is", async (f) => {
  const postId = f.published[5];
  await addReplies(f, postId, 3);
  // first read: the extractive stand-in of this page, computed from the current replies
  const first = await view(f, postId);
  assertEquals(first.summary.source, "extractive");
  assertEquals(first.summary.stale, false);
  await settleBackground();
  const made = await view(f, postId);
  assertEquals([made.summary.source, made.summary.stale], ["llm", false]);
  // a reply after it: the stored summary is older than the replies
  await addReplies(f, postId, 1, "later");
  const older = await view(f, postId);
  assertEquals([older.summary.text, older.summary.stale], [made.summary.text, true]);
  await settleBackground();
  assertEquals((await view(f, postId)).summary.stale, false);
});

it("unchanged threads cost no call and one statement per read once cached", async (f) => {
  const postId = f.published[1];
  const before = f.fake.chatCalls();
  const res = await read(f, postId);
  assertEquals(dbStatements(res), 1); // the post and its replies; the summary is cached
  await readConcurrently(f, postId, 20);
  await settleBackground();
  assertEquals(f.fake.chatCalls(), before);
});

it("LLM down → extractive (retried after a backoff); LLM back → regenerated once", async (f) => {
  const postId = f.published[2];
  await addReplies(f, postId, 5);
  await f.env.db
    .sql`update replies set like_count = 9 where post_id = ${postId} and body = 'reply 3'`;
  f.fake.behave({ status: 500 }, "/v1/chat/completions");
  const before = f.fake.chatCalls();
  await readConcurrently(f, postId, 10);
  await settleBackground();
  assertEquals(f.fake.chatCalls() - before, 1);
  const down = await view(f, postId);
  assertEquals(down.summary.source, "extractive");
  assertEquals(down.summary.stale, false);
  assert(down.summary.text.startsWith("5 replies. Most liked: “reply 3”"), down.summary.text);
  // within the backoff: no more calls, however many read
  await readConcurrently(f, postId, 10);
  await settleBackground();
  assertEquals(f.fake.chatCalls() - before, 1);

  // the backoff passes, and the LLM is back
  await f.env.db.sql`update thread_summaries set retry_after = now() - interval '1 second'
    where post_id = ${postId}`;
  await forgetSummary(f.env.deps.cache, postId);
  // It answers only once the 20 reads are done (a gate): none of them can see its summary.
  const retryGate = Promise.withResolvers<void>();
  f.fake.behave({ until: retryGate.promise }, "/v1/chat/completions");
  const retrying = await readConcurrently(f, postId, 20).finally(retryGate.resolve);
  assert(retrying.every((v) => v.summary.source === "extractive"));
  await settleBackground();
  assertEquals(f.fake.chatCalls() - before, 2);
  const back = await view(f, postId);
  assertEquals(back.summary.source, "llm");
  f.fake.behave({}, "/v1/chat/completions");
  await readConcurrently(f, postId, 10);
  await settleBackground();
  assertEquals(f.fake.chatCalls() - before, 2);
});

it("the LLM sees the newest replies only, within the character budget", async (f) => {
  const postId = f.published[3];
  await f.env.db.sql`
    insert into replies (post_id, author_id, body, created_at)
    select ${postId}, ${f.userIds[6]}, 'numbered ' || g || ' ' || repeat('la ', 30),
      '2026-11-20 12:00:00+00'::timestamptz + g * interval '1 second'
    from generate_series(1, 80) g`;
  const before = f.fake.calls.length;
  await view(f, postId);
  await settleBackground();
  const calls = f.fake.calls.slice(before).filter((c) => c.path.endsWith("/chat/completions"));
  assertEquals(calls.length, 1);
  const prompt: string = JSON.parse(calls[0].body).messages[1].content;
  assert(prompt.includes("numbered 80 "), "the newest reply is in");
  assert(!prompt.includes("numbered 1 "), "the oldest is not");
  assert(prompt.length < 3000 + 1200, `prompt of ${prompt.length} chars`);
});

it("LLM calls and tokens are in the metrics", () => {
  const labels = { feature: "thread_summary", model: "gpt-4o-mini" };
  assert(metrics.value("llm_calls_total", { ...labels, outcome: "ok" }) >= 4);
  assert(metrics.value("llm_tokens_total", { ...labels, kind: "prompt" }) >= 1200);
  assert(metrics.value("llm_tokens_total", { ...labels, kind: "completion" }) >= 200);
  assertEquals(metrics.value("llm_calls_total", { ...labels, outcome: "error" }), 1);
});

it("pages through replies with the cursor; the summary comes with every page", async (f) => {
  const postId = f.published[4];
  await addReplies(f, postId, 130);
  const first = await view(f, postId);
  assertEquals(first.replies.items.length, 100);
  assert(first.replies.next_cursor, "a second page");
  const res = await read(f, postId, `?cursor=${first.replies.next_cursor}`);
  assertEquals(res.status, 200);
  const second: View = await res.json();
  assertEquals(second.replies.items.length, 30);
  assertEquals(second.replies.next_cursor, null);
  const ids = new Set([...first.replies.items, ...second.replies.items].map((r) => r.id));
  assertEquals(ids.size, 130);
  assert(second.summary.text.length > 0);
  await settleBackground();
});

it("bad inputs and invisible posts → 4xx problem+json", async (f) => {
  const [draft] = await f.env.db.sql`
    select id from posts where status = 'draft' and author_id <> ${DEMO_USER_ID} limit 1`;
  for (
    const [path, status] of [
      [`/${draft.id}`, 404],
      [`/${crypto.randomUUID()}`, 404],
      ["/not-a-uuid", 400],
      [`/${f.published[4]}?cursor=zzz`, 400],
    ] as const
  ) {
    const res = await f.app.request(`/thread-summary${path}`, {
      headers: { authorization: `Bearer ${f.demoToken}` },
    });
    assertEquals(res.status, status, path);
    assertEquals(res.headers.get("content-type"), "application/problem+json");
  }
  const anon = await f.app.request(`/thread-summary/${f.published[1]}`);
  assertEquals(anon.status, 401);
});

function assertMatchText(text: string, pattern: RegExp) {
  assert(pattern.test(text), `${text} !~ ${pattern}`);
}
