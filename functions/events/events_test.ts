/**
 * events against real Postgres and Redis: every accepted event is stored (20 parallel
 * senders), anonymous senders are limited per IP, bad input is a 4xx problem+json.
 */
import { assert, assertEquals, assertMatch } from "../../scripts/testing/assert.ts";
import { seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { createApp } from "./app.ts";

/** 25 users, the app, and tokens of 20 of them. */
async function setup() {
  const env = await functionTestEnv({
    env: { EVENTS_RATE_LIMIT_PER_MIN: "100000", ANON_WRITE_RATE_LIMIT_PER_MIN: "3" },
  });
  await seed(env.db.sql, { users: 25, posts: 10, seed: 9 });
  const app = createApp(env.deps);
  const db = env.db.sql;
  const users = (await db`select id from profiles order by id limit 20`).map((r) => r.id as string);
  const tokens = await Promise.all(users.map((id) => env.keys.mint(id)));
  return { env, app, db, users, tokens, close: () => env.close() };
}
type Fixture = Awaited<ReturnType<typeof setup>>;
const it = suite("events", setup);

function send({ app }: Fixture, body: unknown, headers: Record<string, string> = {}) {
  return app.request("/events", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

it("20 parallel senders: the table holds exactly the sum of `accepted`", async (f) => {
  const results = await Promise.all(f.tokens.map(async (token, i) => {
    let accepted = 0;
    for (let call = 0; call < 5; call++) {
      const n = 1 + ((i * 7 + call * 13) % 100);
      const res = await send(f, {
        events: Array.from({ length: n }, (_, k) => ({
          name: "player.track_started",
          properties: { k, call },
          ...(k % 2 ? { occurred_at: new Date(Date.now() - 60_000).toISOString() } : {}),
        })),
      }, { authorization: `Bearer ${token}` });
      assertEquals(res.status, 202, await res.clone().text());
      accepted += (await res.json()).accepted;
    }
    return accepted;
  }));
  const total = results.reduce((a, b) => a + b, 0);
  const [{ n }] = await f.db`select count(*)::int as n from events`;
  assertEquals(n, total);
  const perUser = await f.db`select count(distinct user_id)::int as u from events`;
  assertEquals(perUser[0].u, 20);
});

it("anonymous events are stored without a user, limited to N per minute per IP", async (f) => {
  const headers = { "cf-connecting-ip": "203.0.113.7" };
  for (let i = 0; i < 3; i++) {
    const res = await send(f, { events: [{ name: "app.opened" }], anonymous_id: "dev-1" }, headers);
    assertEquals(res.status, 202);
  }
  const limited = await send(f, { events: [{ name: "app.opened" }] }, headers);
  assertEquals(limited.status, 429);
  assert(limited.headers.get("retry-after"));
  assertEquals((await limited.json()).code, "rate_limited");
  // Another IP has its own allowance.
  const other = await send(f, { events: [{ name: "app.opened" }] }, {
    "cf-connecting-ip": "198.51.100.1",
  });
  assertEquals(other.status, 202);
  const rows = await f.db`select user_id, anonymous_id from events where name = 'app.opened'`;
  assertEquals(rows.length, 4);
  assert(rows.every((r) => r.user_id === null));
  assertEquals(rows.filter((r) => r.anonymous_id === "dev-1").length, 3);
});

it("bad input → 4xx problem+json naming the problem, nothing stored", async (f) => {
  const auth = { authorization: `Bearer ${f.tokens[0]}`, "cf-connecting-ip": "192.0.2.1" };
  const [{ n: before }] = await f.db`select count(*)::int as n from events`;
  const cases: [unknown, number, RegExp][] = [
    [{ events: [] }, 400, /events/],
    [{ events: Array.from({ length: 101 }, () => ({ name: "a.b" })) }, 400, /events/],
    [{ events: [{ name: "Bad Name" }] }, 400, /events\.0\.name/],
    [{ events: [{ name: "a.b.c.d.e" }] }, 400, /events\.0\.name/],
    [
      { events: [{ name: "ok" }, { name: "ok", properties: { big: "x".repeat(5000) } }] },
      400,
      /events\.1\.properties/,
    ],
    [{ events: [{ name: "ok", properties: [1, 2] }] }, 400, /events\.0\.properties/],
    [{ events: [{ name: "ok", properties: { s: "a\u0000b" } }] }, 400, /events\.0\.properties/],
    [{ events: [{ name: "ok", occurred_at: "yesterday" }] }, 400, /events\.0\.occurred_at/],
    [{ events: [{ name: "ok", occurred_at: "2099-01-01T00:00:00Z" }] }, 400, /occurred_at/],
    [{ events: [{ name: "ok" }], anonymous_id: "has space" }, 400, /anonymous_id/],
    ["{not json", 400, /JSON/i],
  ];
  for (const [body, status, detail] of cases) {
    const res = await send(f, body, auth);
    assertEquals(res.status, status, JSON.stringify(body).slice(0, 80));
    assertEquals(res.headers.get("content-type"), "application/problem+json");
    assertMatch((await res.json()).detail, detail);
  }
  const wrongType = await f.app.request("/events", {
    method: "POST",
    headers: { ...auth, "content-type": "text/plain" },
    body: JSON.stringify({ events: [{ name: "ok" }] }),
  });
  assertEquals(wrongType.status, 415);
  assertEquals((await wrongType.json()).code, "unsupported_media_type");
  const badToken = await send(f, { events: [{ name: "ok" }] }, { authorization: "Bearer nope" });
  assertEquals(badToken.status, 401);
  const tooBig = await send(f, "x".repeat(2 * 1024 * 1024), auth);
  assertEquals(tooBig.status, 413);
  const [{ n: after }] = await f.db`select count(*)::int as n from events`;
  assertEquals(after, before);
});

it("a malformed Authorization header is a 401, not an anonymous sender; nothing stored", async (f) => {
  const [{ n: before }] = await f.db`select count(*)::int as n from events`;
  for (
    const authorization of [
      `Bearer ${f.tokens[1]} junk`,
      `Token ${f.tokens[1]}`,
      `Bearer ${f.tokens[1]}, Bearer ${f.tokens[2]}`,
      "Bearer",
    ]
  ) {
    const res = await send(f, { events: [{ name: "auth.junk" }] }, {
      authorization,
      "cf-connecting-ip": "192.0.2.50",
    });
    assertEquals(res.status, 401, authorization.slice(0, 20));
    assertEquals(res.headers.get("content-type"), "application/problem+json");
  }
  // A token without exp (valid forever) or without role is refused too.
  for (const omit of ["exp", "role", "sub", "aud"]) {
    const res = await send(f, { events: [{ name: "auth.junk" }] }, {
      authorization: `Bearer ${await f.env.keys.mint(f.users[1], { omit: [omit] })}`,
    });
    assertEquals(res.status, 401, omit);
    assertMatch((await res.json()).detail, new RegExp(omit));
  }
  const [{ n: after }] = await f.db`select count(*)::int as n from events`;
  assertEquals(after, before);
});

it("a signed-out supabase-js client's project key (anon JWT, publishable key) is anonymous", async (f) => {
  const keys = [await f.env.keys.mintAnon(), "sb_publishable_local_dev"];
  for (const [i, key] of keys.entries()) {
    const res = await send(f, { events: [{ name: "anon.key" }], anonymous_id: `key-${i}` }, {
      authorization: `Bearer ${key}`,
      apikey: key,
      "cf-connecting-ip": `198.51.100.${20 + i}`,
    });
    assertEquals(res.status, 202, await res.clone().text());
  }
  const rows = await f.db`select user_id, anonymous_id from events where name = 'anon.key'`;
  assertEquals(rows.length, 2);
  assert(rows.every((r) => r.user_id === null));
});
