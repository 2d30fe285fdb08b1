/**
 * Every route of every function, fed garbage: malformed ids, bodies of the wrong shape or
 * type, broken JSON, absurd query values. Whatever comes in, the answer is a 4xx
 * problem+json — never a 5xx. Routes are read from each function's OpenAPI document, so a new
 * route is covered without touching this file.
 */
import { assert } from "./assert.ts";
import { DEMO_USER_ID, seed } from "./seed.ts";
import { functionTestEnv } from "./test_env.ts";
import { it } from "./test_http.ts";

const env = await functionTestEnv({
  env: {
    // Limits would turn later garbage into 429s and hide what the route does with it.
    FEED_RATE_LIMIT_PER_MIN: "100000",
    POST_RATE_LIMIT_PER_MIN: "100000",
    REPLY_RATE_LIMIT_PER_MIN: "100000",
    LIKES_RATE_LIMIT_PER_MIN: "100000",
    PROFILE_SEARCH_RATE_LIMIT_PER_MIN: "100000",
    RECALL_RATE_LIMIT_PER_MIN: "100000",
    RECALL_RATE_LIMIT_PER_HOUR: "100000",
    RECALL_READ_RATE_LIMIT_PER_MIN: "100000",
    EVENTS_RATE_LIMIT_PER_MIN: "100000",
    ANON_WRITE_RATE_LIMIT_PER_MIN: "100000",
    NOTIFICATIONS_RATE_LIMIT_PER_MIN: "100000",
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: "sb_secret_bad_input_test" }),
  },
});
await seed(env.db.sql, { users: 20, posts: 50 });
const { createGateway } = await import("./gateway.ts");
const { sql } = await import("../shared/db.ts");
const { settleBackground } = await import("../shared/background.ts");
const gateway = await createGateway({ jwks: env.keys.jwks });
const token = await env.keys.mint(DEMO_USER_ID);

const ids = [
  "x",
  "00000000-0000-0000-0000-000000000000",
  "%00",
  "a".repeat(300),
  "-1",
  DEMO_USER_ID,
];
const bodies: (string | undefined)[] = [
  undefined,
  "",
  "{",
  "[]",
  "null",
  "42",
  '"text"',
  "{}",
  '{"a":1}',
  JSON.stringify({
    body: 7,
    text: [],
    ids: "x",
    like: "x",
    events: {},
    persona_ids: [1],
    all: "yes",
  }),
  JSON.stringify({
    text: "x".repeat(5000),
    body: "y".repeat(5000),
    events: Array(200).fill({ name: "a" }),
  }),
];
const queries = [
  "",
  "?limit=abc",
  "?limit=-5",
  "?limit=1e309",
  "?cursor=%ff%fe",
  "?ids=x,y",
  "?q=%00",
  "?day=1999-99-99",
];

/** Every (method, path) the functions document. */
async function routes(): Promise<{ method: string; path: string }[]> {
  const all: { method: string; path: string }[] = [];
  for (const slug of gateway.slugs) {
    const res = await gateway.fetch(
      new Request(`http://x/functions/v1/${slug}/openapi.json`, {
        headers: { authorization: `Bearer ${token}` },
      }),
    );
    const doc = await res.json();
    for (
      const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)
    ) {
      for (const method of Object.keys(ops)) all.push({ method: method.toUpperCase(), path });
    }
  }
  return all;
}

it("garbage in every route: always 4xx problem+json (or success), never a 5xx", async () => {
  const found = await routes();
  assert(found.length >= 25, `only ${found.length} routes documented`);
  const failures: string[] = [];
  for (const { method, path } of found) {
    for (const id of ids) {
      const concrete = path.replace(/\{[^}]+\}/g, encodeURIComponent(id));
      for (const query of method === "GET" ? queries : [""]) {
        for (const body of method === "GET" || method === "DELETE" ? [undefined] : bodies) {
          for (
            const contentType of body === undefined
              ? [undefined]
              : ["application/json", "text/plain"]
          ) {
            const headers: Record<string, string> = {
              authorization: `Bearer ${token}`,
              apikey: "sb_secret_bad_input_test",
            };
            if (contentType) headers["content-type"] = contentType;
            const res = await gateway.fetch(
              new Request(`http://x/functions/v1${concrete}${query}`, { method, headers, body }),
            );
            const text = await res.text();
            if (res.status >= 500) {
              failures.push(
                `${method} ${concrete}${query} ${contentType ?? ""} ${
                  body?.slice(0, 40) ?? ""
                } → ${res.status} ${text.slice(0, 200)}`,
              );
            } else if (
              res.status >= 400 && !res.headers.get("content-type")?.includes("problem+json")
            ) {
              failures.push(`${method} ${concrete}${query} → ${res.status} without problem+json`);
            }
          }
        }
      }
    }
  }
  assert(
    failures.length === 0,
    `${failures.length} bad answers:\n${failures.slice(0, 20).join("\n")}`,
  );
});

it("searches: a query under 3 characters is a 400; pathological ones are bounded, never a 5xx", async () => {
  const auth = { authorization: `Bearer ${token}` };
  const search = (q: string) =>
    gateway.fetch(
      new Request(`http://x/functions/v1/profiles/search?q=${encodeURIComponent(q)}`, {
        headers: auth,
      }),
    );
  for (const q of ["a", "ab", "  x  ", "%%"]) {
    const res = await search(q);
    assert(res.status === 400, `${q}: ${res.status} ${await res.clone().text()}`);
    assert(res.headers.get("content-type") === "application/problem+json");
    assert((await res.text()).includes("q"));
  }
  for (const q of ["user_".repeat(13).slice(0, 64), "or ".repeat(21), "a b c d e f g h i j k"]) {
    const res = await search(q);
    assert(res.status === 200, `${q}: ${res.status} ${await res.clone().text()}`);
    await res.body?.cancel();
  }
});

it("teardown", async () => {
  await settleBackground();
  await sql.end();
  await env.close();
});
