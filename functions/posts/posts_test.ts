import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { DEMO_USER_ID, seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { assertProblem, dbStatements, suite } from "../../scripts/testing/test_http.ts";
import { createApp } from "./app.ts";

// These tests fire up to 100 concurrent requests, some from one user, to prove counters and
// coalescing; admission (per-user caps, the adaptive limit) is proved in shared/http/app_test.ts.
const admissionOff = { MIN_IN_FLIGHT: "512", MAX_IN_FLIGHT: "512", USER_MAX_IN_FLIGHT: "512" };

const it = suite("posts", async () => {
  const env = await functionTestEnv({ env: { POST_RATE_LIMIT_PER_MIN: "20", ...admissionOff } });
  await seed(env.db.sql, { users: 60, posts: 300, seed: 5 });
  const app = createApp(env.deps);
  const demoToken = await env.keys.mint(DEMO_USER_ID);
  const userIds: string[] = (await env.db.sql`select id from profiles order by id`).map((r) =>
    r.id
  );
  const published: string[] = (await env.db.sql`
    select id from posts where status = 'published' order by id`).map((r) => r.id);
  const [othersDraft] = await env.db.sql`
    select id from posts where status = 'draft' and author_id <> ${DEMO_USER_ID} limit 1`;

  async function call(
    path: string,
    init: RequestInit & { token?: string | null; json?: unknown } = {},
  ): Promise<Response> {
    const token = init.token === undefined ? demoToken : init.token;
    const headers = new Headers(init.headers);
    if (token) headers.set("authorization", `Bearer ${token}`);
    let body = init.body;
    if (init.json !== undefined) {
      headers.set("content-type", "application/json");
      body = typeof init.json === "string" ? init.json : JSON.stringify(init.json);
    }
    return await app.request(`/posts${path}`, { ...init, headers, body });
  }

  return { env, call, userIds, published, othersDraft, close: () => env.close() };
});

it("publish a post, read it back: one statement each", async ({ call }) => {
  const res = await call("", {
    method: "POST",
    json: { body: "First 🎸 riff", media_url: "https://cdn.example.com/a.mp3" },
  });
  assertEquals(res.status, 201, await res.clone().text());
  assertEquals(dbStatements(res), 1);
  const post = await res.json();
  assertEquals(post.author.id, DEMO_USER_ID);
  assertEquals(post.body, "First 🎸 riff");
  assertEquals(post.like_count, 0);
  assertEquals(res.headers.get("location"), `/functions/v1/posts/${post.id}`);
  const read = await call(`/${post.id}`);
  assertEquals(read.status, 200);
  assertEquals(dbStatements(read), 1);
  assertEquals((await read.json()).id, post.id);
  const exact = await call("", { method: "POST", json: { body: "é".repeat(2000) } });
  assertEquals(exact.status, 201); // 2000 code points, not 2000 bytes
});

it("bad posts: empty, blank, too long, bad urls, unknown fields, not JSON, oversized, wrong type → 4xx", async ({ call, userIds }) => {
  const post = (json: unknown) => call("", { method: "POST", json });
  await assertProblem(await post({ body: "" }), 400, "body");
  await assertProblem(await post({ body: "   " }), 400, "body");
  await assertProblem(await post({ body: "x".repeat(2001) }), 400, "body");
  await assertProblem(await post({}), 400, "body");
  await assertProblem(await post({ body: "ok", media_url: "ftp://x.example/a" }), 400, "media_url");
  await assertProblem(await post({ body: "ok", thumbnail_url: "not a url" }), 400, "thumbnail_url");
  await assertProblem(await post({ body: "ok", author_id: userIds[3] }), 400);
  await assertProblem(await post("{oops"), 400);
  await assertProblem(await post({ body: "x".repeat(1_100_000) }), 413);
  await assertProblem(await call("", { method: "POST", body: "plain" }), 415);
  await assertProblem(await call("", { method: "POST", json: { body: "hi" }, token: null }), 401);
});

it("a post you can't see is 404; a malformed id is 400", async ({ call, othersDraft }) => {
  await assertProblem(await call(`/${othersDraft.id}`), 404);
  await assertProblem(await call(`/${crypto.randomUUID()}`), 404);
  await assertProblem(await call("/123"), 400, "id");
  await assertProblem(await call(`/${crypto.randomUUID()}/replies`), 404);
});

it("a reply moves reply_count and replies_updated_at with it", async ({ env, call, published, othersDraft }) => {
  const postId = published[0];
  const [before] = await env.db
    .sql`select reply_count, replies_updated_at from posts where id = ${postId}`;
  const res = await call(`/${postId}/replies`, { method: "POST", json: { body: "great one" } });
  assertEquals(res.status, 201, await res.clone().text());
  assertEquals(dbStatements(res), 1);
  const reply = await res.json();
  assertEquals(reply.post_id, postId);
  assertEquals(reply.author.id, DEMO_USER_ID);
  assertEquals(reply.persona_id, null);
  const [after] = await env.db
    .sql`select reply_count, replies_updated_at from posts where id = ${postId}`;
  assertEquals(after.reply_count, before.reply_count + 1);
  assert(after.replies_updated_at > (before.replies_updated_at ?? new Date(0)), "version moved");
  await assertProblem(
    await call(`/${othersDraft.id}/replies`, { method: "POST", json: { body: "hi" } }),
    404,
  );
  await assertProblem(
    await call(`/${crypto.randomUUID()}/replies`, { method: "POST", json: { body: "hi" } }),
    404,
  );
  await assertProblem(await call(`/${postId}/replies`, { method: "POST", json: {} }), 400, "body");
});

it("20 concurrent replies: reply_count equals the rows", async ({ env, call, userIds, published }) => {
  const postId = published[1];
  const tokens = await Promise.all(userIds.slice(10, 30).map((id) => env.keys.mint(id)));
  const responses = await Promise.all(
    tokens.map((token, i) =>
      call(`/${postId}/replies`, { method: "POST", token, json: { body: `reply ${i}` } })
    ),
  );
  assertEquals(responses.map((r) => r.status), Array(20).fill(201));
  const [row] = await env.db.sql`select reply_count,
    (select count(*)::int from replies where post_id = ${postId}) as n from posts where id = ${postId}`;
  assertEquals(row.reply_count, row.n);
});

it("replies walk oldest first, each once, also when many share created_at", async ({ env, call, userIds, published }) => {
  const postId = published[2];
  await env.db.sql`
    insert into replies (post_id, author_id, body, created_at)
    select ${postId}, ${userIds[5]}, 'same instant ' || g, '2026-11-20 12:00:00.123456+00'
    from generate_series(1, 230) g`;
  await env.db.sql`
    insert into replies (post_id, author_id, body, created_at)
    select ${postId}, ${
    userIds[6]
  }, 'later ' || g, '2026-11-21 08:00:00+00'::timestamptz + g * interval '1 us'
    from generate_series(1, 20) g`;
  const seen: { id: string; created_at: string }[] = [];
  let cursor: string | null = null;
  for (let pages = 0; pages < 200; pages++) {
    const res = await call(`/${postId}/replies?limit=9${cursor ? `&cursor=${cursor}` : ""}`);
    assertEquals(res.status, 200, await res.clone().text());
    assertEquals(dbStatements(res), 1);
    const page = await res.json();
    seen.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  assertEquals(seen.length, 250);
  assertEquals(new Set(seen.map((r) => r.id)).size, 250);
  for (let i = 1; i < seen.length; i++) assert(seen[i - 1].created_at <= seen[i].created_at);
  const full = await (await call(`/${postId}/replies?limit=1000`)).json();
  assertEquals(full.items.length, 100); // clamped
  await assertProblem(await call(`/${postId}/replies?cursor=abc`), 400, "cursor");
  await assertProblem(await call(`/${postId}/replies?limit=0`), 400, "limit");
});

it("likes: idempotent, one statement, unknown and invisible ids reported, never 5xx", async ({ env, call, published, othersDraft }) => {
  const [a, b] = published.slice(10, 12);
  await env.db.sql`delete from likes where user_id = ${DEMO_USER_ID} and post_id in (${a}, ${b})`;
  const [{ like_count: base }] = await env.db.sql`select like_count from posts where id = ${a}`;
  const unknown = crypto.randomUUID();
  const first = await call("/likes", {
    method: "POST",
    json: { like: [a, a, unknown, othersDraft.id], unlike: [b] },
  });
  assertEquals(first.status, 200, await first.clone().text());
  assertEquals(dbStatements(first), 1);
  const result = await first.json();
  assertEquals(result.items.map((i: { id: string }) => i.id), [a, b]);
  assertEquals(result.items[0], { id: a, like_count: base + 1, liked_by_me: true });
  assertEquals(result.items[1].liked_by_me, false);
  assertEquals(result.not_found, [unknown, othersDraft.id]);
  const again = await (await call("/likes", { method: "POST", json: { like: [a] } })).json();
  assertEquals(again.items[0].like_count, base + 1);
  const undo = await (await call("/likes", { method: "POST", json: { unlike: [a] } })).json();
  assertEquals(undo.items[0], { id: a, like_count: base, liked_by_me: false });
});

it("likes: bad batches → 400", async ({ call, published }) => {
  const ids = (n: number) => Array.from({ length: n }, () => crypto.randomUUID());
  const post = (json: unknown) => call("/likes", { method: "POST", json });
  await assertProblem(await post({ like: ids(60), unlike: ids(41) }), 400, "at most 100");
  await assertProblem(await post({}), 400, "no post ids");
  await assertProblem(await post({ like: [published[0]], unlike: [published[0]] }), 400, "unlike");
  await assertProblem(await post({ like: ["nope"] }), 400, "like");
  await assertProblem(await post({ like: published[0] }), 400, "like");
});

it("100 concurrent mixed like/unlike batches leave like_count equal to the rows", async ({ env, call, userIds, published }) => {
  const targets = published.slice(20, 50);
  const users = userIds.slice(0, 25);
  const tokens = await Promise.all(users.map((id) => env.keys.mint(id)));
  let state = 7;
  const rand = () => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648;
  const requests = Array.from({ length: 100 }, (_, i) => {
    const like: string[] = [];
    const unlike: string[] = [];
    for (const id of targets) {
      const r = rand();
      if (r < 0.35) like.push(id);
      else if (r < 0.6) unlike.push(id);
    }
    return call("/likes", {
      method: "POST",
      token: tokens[i % tokens.length],
      json: { like, unlike: unlike.length || like.length ? unlike : [targets[0]] },
    });
  });
  const responses = await Promise.all(requests);
  for (const res of responses) assertEquals(res.status, 200, await res.text());
  const wrong = await env.db.sql`
    select p.id, p.like_count, (select count(*)::int from likes l where l.post_id = p.id) as n
    from posts p where p.id = any(${targets}::uuid[])
      and p.like_count <> (select count(*) from likes l where l.post_id = p.id)`;
  assertEquals([...wrong], []);
});

it("posting is limited to 20 a minute per user", async ({ env, call, userIds }) => {
  const token = await env.keys.mint(userIds[40]);
  const statuses: number[] = [];
  for (let i = 0; i < 20; i++) {
    statuses.push((await call("", { method: "POST", token, json: { body: `n${i}` } })).status);
  }
  assertEquals(statuses, Array(20).fill(201));
  await assertProblem(await call("", { method: "POST", token, json: { body: "one more" } }), 429);
});

it("generate-replies: 202 with one active job per persona, even for 20 parallel identical calls", async ({ env, call, userIds, published }) => {
  const personas: string[] = (await env.db.sql`select id from personas order by id limit 2`).map((
    r,
  ) => r.id);
  const post = published[7];
  const tokens = await Promise.all(userIds.slice(1, 21).map((id) => env.keys.mint(id)));
  const responses = await Promise.all(
    tokens.map((token) =>
      call(`/${post}/generate-replies`, { method: "POST", token, json: { persona_ids: personas } })
    ),
  );
  for (const res of responses) assertEquals(res.status, 202, await res.clone().text());
  const jobIds = new Set((await Promise.all(responses.map((r) => r.json())))
    .flatMap((b) => b.jobs.map((j: { job_id: string }) => j.job_id)));
  assertEquals(jobIds.size, 2);
  const [{ count }] = await env.db.sql`
    select count(*)::int from jobs where job_type = 'generate_reply' and payload->>'post_id' = ${post}`;
  assertEquals(count, 2);
});

it("generate-replies: bad input → 4xx problem+json", async ({ env, call, published, othersDraft }) => {
  const [persona] = await env.db.sql`select id from personas limit 1`;
  const post = published[8];
  await assertProblem(
    await call(`/${post}/generate-replies`, { method: "POST", json: { persona_ids: [] } }),
    400,
    "persona_ids",
  );
  await assertProblem(
    await call(`/${post}/generate-replies`, {
      method: "POST",
      json: { persona_ids: Array.from({ length: 6 }, () => crypto.randomUUID()) },
    }),
    400,
    "persona_ids",
  );
  await assertProblem(
    await call(`/${post}/generate-replies`, {
      method: "POST",
      json: { persona_ids: [crypto.randomUUID()] },
    }),
    400,
    "persona_ids",
  );
  await assertProblem(
    await call(`/${crypto.randomUUID()}/generate-replies`, {
      method: "POST",
      json: { persona_ids: [persona.id] },
    }),
    404,
  );
  await assertProblem(
    await call(`/${othersDraft.id}/generate-replies`, {
      method: "POST",
      json: { persona_ids: [persona.id] },
    }),
    404,
  );
  await assertProblem(
    await call(`/${post}/generate-replies`, { method: "POST", json: "{oops" }),
    400,
  );
  await assertProblem(
    await call(`/${post}/generate-replies`, {
      method: "POST",
      json: { persona_ids: [persona.id] },
      token: null,
    }),
    401,
  );
});
