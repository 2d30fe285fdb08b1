/**
 * notifications against real Postgres and Redis: keyset pages newest first with the unread
 * count, marking read by ids or all (own rows only), bad input → 4xx problem+json.
 */
import { assert, assertEquals, assertMatch } from "../../scripts/testing/assert.ts";
import { DEMO_USER_ID, seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { createApp } from "./app.ts";

/** Notifications of the demo user and another, the app, and both users' tokens. */
async function setup() {
  const env = await functionTestEnv({ env: { NOTIFICATIONS_RATE_LIMIT_PER_MIN: "100000" } });
  await seed(env.db.sql, { users: 5, posts: 5, seed: 11 });
  const app = createApp(env.deps);
  const db = env.db.sql;
  const [other] = await db`select id from profiles where id <> ${DEMO_USER_ID} limit 1`;
  const token = await env.keys.mint(DEMO_USER_ID);
  const otherToken = await env.keys.mint(other.id);

  // 45 for the demo user, 15 of them sharing one instant (ties broken by id); 3 for another.
  await db`insert into notifications (user_id, kind, payload, created_at)
    select ${DEMO_USER_ID}, 'persona_reply', jsonb_build_object('n', g),
           case when g <= 15 then '2026-11-20 12:00:00.123456+00'::timestamptz
                else now() - g * interval '1 minute' end
    from generate_series(1, 45) g`;
  await db`insert into notifications (user_id, kind) select ${other.id}, 'digest' from generate_series(1, 3)`;
  return { env, app, db, other, token, otherToken, close: () => env.close() };
}
type Fixture = Awaited<ReturnType<typeof setup>>;
const it = suite("notifications", setup);

interface Page {
  items: { id: string; created_at: string; read_at: string | null; payload: { n: number } }[];
  next_cursor: string | null;
  unread_count: number;
}

function list({ app, token }: Fixture, query = "", t = token) {
  return app.request(`/notifications${query}`, { headers: { authorization: `Bearer ${t}` } });
}
function markRead(
  { app, token }: Fixture,
  body: unknown,
  t = token,
  contentType = "application/json",
) {
  return app.request("/notifications/read", {
    method: "POST",
    headers: { authorization: `Bearer ${t}`, "content-type": contentType },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

it("pages walk every notification once, newest first, with the unread count", async (f) => {
  const seen: Page["items"] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const res = await list(f, `?limit=7${cursor ? `&cursor=${cursor}` : ""}`);
    assertEquals(res.status, 200, await res.clone().text());
    const page: Page = await res.json();
    assertEquals(page.unread_count, 45);
    seen.push(...page.items);
    cursor = page.next_cursor;
    pages++;
  } while (cursor && pages < 20);
  assertEquals(seen.length, 45);
  assertEquals(new Set(seen.map((i) => i.id)).size, 45);
  for (let i = 1; i < seen.length; i++) {
    assert(seen[i - 1].created_at >= seen[i].created_at, "not newest first");
  }
  const first: Page = await (await list(f)).json();
  assertEquals(first.items.length, 20); // default limit
  const clamped: Page = await (await list(f, "?limit=1000")).json();
  assertEquals(clamped.items.length, 45); // clamped to 100, fewer exist
  const others: Page = await (await list(f, "", f.otherToken)).json();
  assertEquals([others.items.length, others.unread_count], [3, 3]);
});

it("mark read by ids (own only) and all", async (f) => {
  const page: Page = await (await list(f, "?limit=3")).json();
  const ids = page.items.map((i) => i.id);
  const [foreign] = await f.db`select id from notifications where user_id = ${f.other.id} limit 1`;
  const res = await markRead(f, { ids: [...ids, foreign.id] });
  assertEquals(res.status, 200);
  assertEquals(await res.json(), { updated: 3, unread_count: 42 });
  const [{ read_at }] = await f.db`select read_at from notifications where id = ${foreign.id}`;
  assertEquals(read_at, null); // not the caller's: untouched
  const again = await markRead(f, { ids });
  assertEquals(await again.json(), { updated: 0, unread_count: 42 });
  const after: Page = await (await list(f, "?limit=3")).json();
  assert(after.items.every((i) => i.read_at !== null));
  const all = await markRead(f, { all: true });
  assertEquals(await all.json(), { updated: 42, unread_count: 0 });
  assertEquals((await (await list(f)).json()).unread_count, 0);
  assertEquals((await (await list(f, "", f.otherToken)).json()).unread_count, 3);
});

it("bad input → 4xx problem+json", async (f) => {
  const cases: [Response | Promise<Response>, number, RegExp][] = [
    [list(f, "?cursor=garbage"), 400, /cursor/],
    [list(f, "?cursor=Zm9vCmJhcgpiYXo"), 400, /cursor/],
    [list(f, "?limit=0"), 400, /limit/],
    [list(f, "?limit=abc"), 400, /limit/],
    [markRead(f, { ids: [crypto.randomUUID()], all: true }), 400, /exactly one/],
    [markRead(f, {}), 400, /exactly one/],
    [markRead(f, { all: false }), 400, /all/],
    [markRead(f, { ids: [] }), 400, /ids/],
    [markRead(f, { ids: ["nope"] }), 400, /ids\.0/],
    [markRead(f, { ids: Array.from({ length: 101 }, () => crypto.randomUUID()) }), 400, /ids/],
    [markRead(f, "{oops"), 400, /JSON/i],
    [markRead(f, { all: true }, f.token, "text/plain"), 415, /json/],
    [f.app.request("/notifications"), 401, /token/],
    [markRead(f, { all: true }, "bad.token.here"), 401, /token/],
  ];
  for (const [pending, status, detail] of cases) {
    const res = await pending;
    assertEquals(res.status, status, await res.clone().text());
    assertEquals(res.headers.get("content-type"), "application/problem+json");
    assertMatch((await res.json()).detail, detail);
  }
});

it("the API can't create or read others' notifications (RLS + grants)", async (f) => {
  const denied = await f.db.begin(async (tx) => {
    await tx`select set_config('role', 'authenticated', true),
      set_config('request.jwt.claims', ${
      JSON.stringify({ sub: DEMO_USER_ID, role: "authenticated" })
    }, true)`;
    const visible = await tx`select distinct user_id from notifications`;
    assertEquals(visible.map((r) => r.user_id), [DEMO_USER_ID]);
    await tx`insert into notifications (user_id, kind) values (${DEMO_USER_ID}, 'forged')`;
  }).then(() => null, (err) => String(err));
  assertMatch(denied ?? "", /permission denied/);
});
