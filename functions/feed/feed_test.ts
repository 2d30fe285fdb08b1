import { assert, assertEquals, assertMatch } from "../../scripts/testing/assert.ts";
import { createDevKeys } from "../../scripts/dev/dev_auth.ts";
import { DEMO_USER_ID, seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { dbStatements, suite } from "../../scripts/testing/test_http.ts";
import { deleteKeys } from "../../scripts/testing/test_redis.ts";
import { createApp } from "./app.ts";

// These tests fire up to 100 concurrent requests, some from one user, to prove counters and
// coalescing; admission (per-user caps, the adaptive limit) is proved in shared/http/app_test.ts.
const admissionOff = { MIN_IN_FLIGHT: "512", MAX_IN_FLIGHT: "512", USER_MAX_IN_FLIGHT: "512" };

/** A database with 900 posts, the app, and the demo user's token. */
async function setup() {
  const env = await functionTestEnv({
    env: { FEED_RATE_LIMIT_PER_MIN: "100000", ...admissionOff },
  });
  await seed(env.db.sql, { users: 80, posts: 900, seed: 7 });
  const app = createApp(env.deps);
  const demoToken = await env.keys.mint(DEMO_USER_ID);
  return { env, app, demoToken, close: () => env.close() };
}
type Fixture = Awaited<ReturnType<typeof setup>>;
const it = suite("feed", setup);

interface Item {
  id: string;
  created_at: string;
  like_count: number;
  liked_by_me: boolean;
  author: { id: string; username: string };
}
interface Page {
  items: Item[];
  next_cursor: string | null;
}

function get(
  { app, demoToken }: Fixture,
  query: string,
  token: string | null = demoToken,
  headers: Record<string, string> = {},
) {
  return app.request(`/feed${query}`, {
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
  });
}

async function walk(f: Fixture, kind: string, limit: number): Promise<Item[]> {
  const all: Item[] = [];
  let cursor: string | null = null;
  for (let pages = 0; pages < 1000; pages++) {
    const res = await get(f, `?kind=${kind}&limit=${limit}${cursor ? `&cursor=${cursor}` : ""}`);
    assertEquals(res.status, 200, await res.clone().text());
    const page: Page = await res.json();
    all.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) return all;
  }
  throw new Error("too many pages");
}

it("for-you walks every published post exactly once, hottest first", async (f) => {
  const items = await walk(f, "for-you", 37);
  const [{ count }] = await f.env.db
    .sql`select count(*)::int from posts where status = 'published'`;
  assertEquals(items.length, count);
  assertEquals(new Set(items.map((i) => i.id)).size, count);
  const scores = await f.env.db.sql`select id, hot_score from posts where status = 'published'`;
  const score = new Map(scores.map((r) => [r.id, r.hot_score]));
  for (let i = 1; i < items.length; i++) {
    assert(score.get(items[i - 1].id) >= score.get(items[i].id), "out of order");
  }
});

it("following walks the followees' posts exactly once, also when many share created_at", async (f) => {
  const [followee] = await f.env.db.sql`
    select followee_id as id from follows where follower_id = ${DEMO_USER_ID} limit 1`;
  await f.env.db.sql`
    insert into posts (author_id, body, created_at)
    select ${followee.id}, 'same instant ' || g, '2026-11-20 12:00:00.123456+00'
    from generate_series(1, 40) g`;
  const items = await walk(f, "following", 7);
  const expected = await f.env.db.sql`
    select p.id from posts p join follows f on f.followee_id = p.author_id
    where f.follower_id = ${DEMO_USER_ID} and p.status = 'published'`;
  assertEquals(items.length, expected.length);
  assertEquals(new Set(items.map((i) => i.id)), new Set(expected.map((r) => r.id)));
  for (let i = 1; i < items.length; i++) {
    assert(items[i - 1].created_at >= items[i].created_at, "not newest first");
  }
});

it("liked_by_me reflects the caller's likes on the shared for-you page", async (f) => {
  const page: Page = await (await get(f, "?kind=for-you&limit=50")).json();
  const liked = await f.env.db.sql`
    select post_id from likes where user_id = ${DEMO_USER_ID}
    and post_id = any(${page.items.map((i) => i.id)}::uuid[])`;
  const likedIds = new Set(liked.map((r) => r.post_id));
  for (const item of page.items) assertEquals(item.liked_by_me, likedIds.has(item.id));
  assert(likedIds.size > 0 || page.items.every((i) => !i.liked_by_me));
});

it("one statement per following page; for-you costs one shared query per cache miss plus one per request", async (f) => {
  const following = await get(f, "?kind=following&limit=11");
  assertEquals(following.status, 200);
  assertEquals(dbStatements(following), 1);
  const cold = await get(f, "?kind=for-you&limit=11");
  assertEquals(dbStatements(cold), 2); // the shared page, then the caller's likes
  const warm = await get(f, "?kind=for-you&limit=11");
  assertEquals(dbStatements(warm), 1); // the caller's likes only
});

it("50 concurrent identical for-you requests cause one feed query", async (f) => {
  const before = f.env.deps.cache.stats.misses;
  const responses = await Promise.all(Array.from({ length: 50 }, () => get(f, "?limit=23")));
  assertEquals(responses.map((r) => r.status), Array(50).fill(200));
  assertEquals(f.env.deps.cache.stats.misses - before, 1);
  // 50 likes lookups + 1 shared page
  assertEquals(responses.reduce((n, r) => n + dbStatements(r), 0), 51);
});

it("limit above the maximum is clamped to 50", async (f) => {
  const page: Page = await (await get(f, "?limit=500")).json();
  assertEquals(page.items.length, 50);
});

it("ETag on every page, If-None-Match answers 304", async (f) => {
  const first = await get(f, "?kind=following&limit=5");
  const tag = first.headers.get("etag");
  assert(tag, "no etag");
  const again = await get(f, "?kind=following&limit=5", f.demoToken, { "if-none-match": tag });
  assertEquals(again.status, 304);
});

/** The ETag of a page, and its body (which the ETag must follow). */
async function tagOf(f: Fixture, query: string, token = f.demoToken) {
  const res = await get(f, query, token);
  assertEquals(res.status, 200);
  const etag = res.headers.get("etag");
  assert(etag, "no etag");
  return { etag, page: await res.json() as Page };
}

it("the same page twice: the same ETag, and 304 with no body on If-None-Match", async (f) => {
  for (const query of ["?kind=for-you&limit=9", "?kind=following&limit=9"]) {
    const one = await tagOf(f, query);
    const two = await tagOf(f, query);
    assertEquals(two.etag, one.etag, query);
    assertEquals(two.page, one.page);
    for (const inm of [one.etag, `W/${one.etag}`, `"nope", ${one.etag}`, "*"]) {
      const res = await get(f, query, f.demoToken, { "if-none-match": inm });
      assertEquals(res.status, 304, `${query} ${inm}`);
      assertEquals(await res.text(), "");
      assertEquals(res.headers.get("etag"), one.etag);
      assertEquals(res.headers.get("cache-control"), "private, no-cache");
    }
    const other = await get(f, query, f.demoToken, { "if-none-match": `"nope"` });
    assertEquals(other.status, 200);
    await other.body?.cancel();
  }
});

it("the caller liking a post on the for-you page changes the ETag (and back)", async (f) => {
  const query = "?kind=for-you&limit=10";
  const before = await tagOf(f, query);
  const target = before.page.items.find((i) => !i.liked_by_me);
  assert(target, "every post liked");
  await f.env.db.sql`insert into likes (user_id, post_id) values (${DEMO_USER_ID}, ${target.id})`;
  const res = await get(f, query, f.demoToken, { "if-none-match": before.etag });
  assertEquals(res.status, 200); // not 304: the overlay changed, though the cached rows did not
  const after: Page = await res.json();
  assert(res.headers.get("etag") !== before.etag);
  assertEquals(after.items.find((i) => i.id === target.id)?.liked_by_me, true);
  // Another user's page (their own overlay) is not this one's.
  const [{ id: otherId }] = await f.env.db.sql`
    select id from profiles where id <> ${DEMO_USER_ID} order by id limit 1`;
  const other = await tagOf(f, query, await f.env.keys.mint(otherId));
  const otherLikes = other.page.items.map((i) => i.liked_by_me).join();
  const demoLikes = after.items.map((i) => i.liked_by_me).join();
  if (otherLikes !== demoLikes) assert(other.etag !== res.headers.get("etag"));
  await f.env.db.sql`delete from likes where user_id = ${DEMO_USER_ID} and post_id = ${target.id}`;
  assertEquals((await tagOf(f, query)).etag, before.etag); // the same page again, the same tag
});

it("another cursor or limit, or the other kind: another ETag", async (f) => {
  const first = await tagOf(f, "?kind=for-you&limit=5");
  const tags = [
    first.etag,
    (await tagOf(f, "?kind=for-you&limit=6")).etag,
    (await tagOf(f, `?kind=for-you&limit=5&cursor=${first.page.next_cursor}`)).etag,
    (await tagOf(f, "?kind=following&limit=5")).etag,
  ];
  assertEquals(new Set(tags).size, tags.length, tags.join(" "));
  const stale = await get(f, "?kind=for-you&limit=6", f.demoToken, { "if-none-match": first.etag });
  assertEquals(stale.status, 200);
  await stale.body?.cancel();
});

it("a refill keeps the ETag when its rows are the same, in any isolate, and changes it when they are not", async (f) => {
  // Each page from a new isolate (deps) after the Redis copy is gone: a refill every time.
  const refilled = async (headers: Record<string, string> = {}) => {
    await deleteKeys(f.env.deps.redis, `${f.env.redisPrefix}*feed:following:*`);
    const app = createApp(f.env.withEnv({}));
    return await get({ ...f, app }, "?kind=following&limit=5", f.demoToken, headers);
  };
  const one = await refilled();
  const tag = one.headers.get("etag")!;
  await one.body?.cancel();
  const two = await refilled({ "if-none-match": tag });
  assertEquals(two.status, 304);
  const [followee] = await f.env.db.sql`
    select followee_id as id from follows where follower_id = ${DEMO_USER_ID} limit 1`;
  await f.env.db.sql`insert into posts (author_id, body) values (${followee.id}, 'brand new')`;
  const three = await refilled({ "if-none-match": tag });
  assertEquals(three.status, 200);
  assert(three.headers.get("etag") !== tag);
  assertEquals((await three.json()).items[0].body, "brand new");
});

for (
  const [query, param] of [
    ["?limit=abc", "limit"],
    ["?limit=-1", "limit"],
    ["?limit=0", "limit"],
    ["?limit=2.5", "limit"],
    ["?kind=popular", "kind"],
    ["?cursor=%%%garbage", "cursor"],
    ["?cursor=bm90IGEgY3Vyc29y", "cursor"],
    [
      `?kind=for-you&cursor=${
        btoa("following\n2026-01-01 00:00:00+00\n00000000-0000-4000-8000-000000000001").replaceAll(
          "=",
          "",
        )
      }`,
      "cursor",
    ],
    [
      `?kind=following&cursor=${
        btoa("following\nDROP TABLE posts\n00000000-0000-4000-8000-000000000001").replaceAll(
          "=",
          "",
        )
      }`,
      "cursor",
    ],
  ] as const
) {
  it(`bad input ${query} → 400 naming ${param}`, async (f) => {
    const res = await get(f, query);
    assertEquals(res.status, 400);
    assertEquals(res.headers.get("content-type"), "application/problem+json");
    const problem = await res.json();
    assertEquals(problem.status, 400);
    assertEquals(problem.code, "invalid_parameter");
    assertEquals(problem.invalid_params[0].name, param);
    assert(problem.request_id, "request_id missing");
  });
}

it("401 for a missing, malformed, expired or foreign token", async (f) => {
  const other = await createDevKeys();
  const cases: [string | null, RegExp][] = [
    [null, /bearer access token is required/],
    ["not-a-jwt", /malformed/],
    [await f.env.keys.mint(DEMO_USER_ID, { ttlS: -10 }), /expired/],
    [await other.mint(DEMO_USER_ID), /signature|not valid/],
  ];
  for (const [token, detail] of cases) {
    const res = await get(f, "", token);
    assertEquals(res.status, 401);
    assertEquals(res.headers.get("content-type"), "application/problem+json");
    assertMatch((await res.json()).detail, detail);
  }
});

it("every response carries x-request-id and Server-Timing", async (f) => {
  const res = await get(f, "?limit=3");
  assertMatch(res.headers.get("x-request-id") ?? "", /^[\w-]+$/);
  assertMatch(res.headers.get("server-timing") ?? "", /db;dur=.*redis;dur=.*upstream;dur=/);
  const bad = await get(f, "?limit=x");
  assert(bad.headers.get("x-request-id"));
});

it("405 with Allow for a wrong method, problem+json 404 for an unknown path", async (f) => {
  const post = await f.app.request("/feed", {
    method: "POST",
    headers: { authorization: `Bearer ${f.demoToken}` },
  });
  assertEquals(post.status, 405);
  assertEquals(post.headers.get("allow"), "GET");
  const missing = await f.app.request("/feed/nope");
  assertEquals(missing.status, 404);
  assertEquals(missing.headers.get("content-type"), "application/problem+json");
});

it("OpenAPI document", async (f) => {
  const res = await f.app.request("/feed/openapi.json");
  assertEquals(res.status, 200);
  const doc = await res.json();
  assert(doc.paths["/feed"], JSON.stringify(Object.keys(doc.paths)));
});

it("the OpenAPI document is generated at the first request for it, once", async (f) => {
  const app = createApp(f.env.withEnv({})); // another isolate: nothing generated yet
  const generate = app.getOpenAPI31Document;
  let calls = 0;
  app.getOpenAPI31Document = (...args) => {
    calls++;
    return generate(...args);
  };
  const first = await app.request("/feed/openapi.json");
  assertEquals(first.status, 200);
  assertEquals(first.headers.get("content-type"), "application/json");
  const body = await first.text();
  assert(JSON.parse(body).paths["/feed"]); // routes added after createFunctionApp are in it
  assertEquals(await (await app.request("/feed/openapi.json")).text(), body);
  assertEquals(calls, 1);
});

it("rate limit headers on an allowed response", async (f) => {
  const res = await get(f, "?limit=2");
  assertMatch(res.headers.get("ratelimit-policy") ?? "", /^"feed";q=100000;w=60$/);
  assertMatch(res.headers.get("ratelimit") ?? "", /^"feed";r=\d+;t=\d+$/);
});
