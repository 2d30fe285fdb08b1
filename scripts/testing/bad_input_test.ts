/**
 * Every route of every function, fed garbage: malformed ids, ids in capitals, bodies of the
 * wrong shape or type, NUL bytes, broken JSON, absurd query values; then malformed
 * Authorization headers, tokens missing required claims, the project's own keys as bearer,
 * methods no function serves, and an Idempotency-Key reused with other bytes. Whatever comes
 * in, the answer is a 4xx problem+json that names no database internals — never a 5xx.
 * Routes are read from each function's OpenAPI document, so a new route is covered without
 * touching this file.
 */
import { assert, assertEquals } from "./assert.ts";
import { DEMO_USER_ID, seed } from "./seed.ts";
import { functionTestEnv } from "./test_env.ts";
import { suite } from "./test_http.ts";
import { createGateway } from "../dev/gateway.ts";
import { settleBackground } from "../../shared/http/background.ts";

const it = suite("bad input", async () => {
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
      ANON_READ_RATE_LIMIT_PER_MIN: "100000",
      PROFILE_EDIT_RATE_LIMIT_PER_MIN: "100000",
      JOBS_RUN_RATE_LIMIT_PER_MIN: "100000",
      SUPABASE_SECRET_KEYS: JSON.stringify({ default: "sb_secret_bad_input_test" }),
    },
  });
  await seed(env.db.sql, { users: 20, posts: 50 });
  const gateway = await createGateway({ deps: env.deps, jwks: env.keys.jwks });
  const token = await env.keys.mint(DEMO_USER_ID);
  const [{ id: postId }] = await env.db.sql`select id::text from posts limit 1`;
  return {
    env,
    gateway,
    token,
    postId: postId as string,
    async close() {
      await settleBackground();
      await env.close();
    },
  };
});
type Fixture = Parameters<Parameters<typeof it>[1]>[0];

const ids = [
  "x",
  "00000000-0000-0000-0000-000000000000",
  "%00",
  "a".repeat(300),
  "-1",
  DEMO_USER_ID,
  DEMO_USER_ID.toUpperCase(),
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
    body: "nul\u0000byte",
    text: "nul\u0000byte",
    display_name: "\u0000",
    bio: "a\u0000b",
    events: [{ name: "a.b", properties: { s: "\u0000" } }],
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

/** What a problem detail must never show: the database's own words. */
const databaseInternals =
  /violates|constraint|byte sequence|UTF8|relation "|column "|syntax error|SQLSTATE|PostgresError/i;

/** Every (method, path) the functions document, and whether it names a security scheme. */
async function routes(
  { gateway, token }: Fixture,
): Promise<{ method: string; path: string; secured: boolean }[]> {
  const all: { method: string; path: string; secured: boolean }[] = [];
  for (const slug of gateway.slugs) {
    const res = await gateway.fetch(
      new Request(`http://x/functions/v1/${slug}/openapi.json`, {
        headers: { authorization: `Bearer ${token}` },
      }),
    );
    const doc = await res.json();
    for (
      const [path, ops] of Object.entries(
        doc.paths as Record<string, Record<string, { security?: unknown[] }>>,
      )
    ) {
      for (const [method, op] of Object.entries(ops)) {
        all.push({ method: method.toUpperCase(), path, secured: !!op.security?.length });
      }
    }
  }
  return all;
}

it("garbage in every route: always 4xx problem+json (or success), never a 5xx", async (f) => {
  const { gateway, token } = f;
  const found = await routes(f);
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
            } else if (res.status >= 400 && databaseInternals.test(text)) {
              failures.push(`${method} ${concrete}${query} → ${res.status} leaks: ${text}`);
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

/** A request to every documented route with `headers`, an id of a seeded post and a small body. */
async function everyRoute(
  f: Fixture,
  headers: Record<string, string>,
  check: (
    route: { method: string; path: string; secured: boolean },
    res: Response,
  ) => string | null,
): Promise<string[]> {
  const failures: string[] = [];
  for (const route of await routes(f)) {
    const concrete = route.path.replace(/\{[^}]+\}/g, f.postId);
    const hasBody = route.method !== "GET" && route.method !== "DELETE";
    const res = await f.gateway.fetch(
      new Request(`http://x/functions/v1${concrete}`, {
        method: route.method,
        headers: { ...headers, ...(hasBody ? { "content-type": "application/json" } : {}) },
        body: hasBody ? JSON.stringify({ events: [{ name: "bad.input" }], text: "hi" }) : undefined,
      }),
    );
    const text = await res.text();
    const label = `${route.method} ${concrete} → ${res.status} ${text.slice(0, 160)}`;
    if (res.status >= 500) failures.push(label);
    else if (res.status >= 400 && !res.headers.get("content-type")?.includes("problem+json")) {
      failures.push(`${label} without problem+json`);
    } else {
      const problem = check(route, new Response(text, { status: res.status }));
      if (problem) failures.push(`${label}: ${problem}`);
    }
  }
  return failures;
}

it("malformed Authorization headers and tokens missing exp/sub/aud/role: 401 on every secured route", async (f) => {
  const { env, token } = f;
  const bad = [
    `Bearer ${token} junk`,
    `Bearer ${token},${token}`,
    `Basic ${btoa("demo:demo")}`,
    "Bearer",
    ...await Promise.all(
      ["exp", "sub", "aud", "role"].map(async (claim) =>
        `Bearer ${await env.keys.mint(DEMO_USER_ID, { omit: [claim] })}`
      ),
    ),
  ];
  const failures: string[] = [];
  for (const authorization of bad) {
    failures.push(
      ...await everyRoute(
        f,
        { authorization },
        (route, res) =>
          route.secured && res.status !== 401
            ? `expected 401 for ${authorization.slice(0, 24)}`
            : null,
      ),
    );
  }
  assert(
    failures.length === 0,
    `${failures.length} bad answers:\n${failures.slice(0, 20).join("\n")}`,
  );
});

it("the project's keys as bearer (anon JWT, publishable key) answer exactly as no credentials do", async (f) => {
  const { env } = f;
  const anonymous = new Map<string, number>();
  await everyRoute(f, {}, (route, res) => {
    anonymous.set(`${route.method} ${route.path}`, res.status);
    return null;
  });
  const failures: string[] = [];
  for (const key of [await env.keys.mintAnon(), "sb_publishable_bad_input_test"]) {
    failures.push(
      ...await everyRoute(f, { authorization: `Bearer ${key}`, apikey: key }, (route, res) => {
        const expected = anonymous.get(`${route.method} ${route.path}`)!;
        // Anonymous routes must not refuse the key; user routes must refuse it as they refuse
        // no token. (Other statuses may differ: each call writes, e.g. a second event batch.)
        return (expected === 401) !== (res.status === 401)
          ? `${key.slice(0, 16)}…: ${res.status}, anonymous ${expected}`
          : null;
      }),
    );
  }
  assert(
    failures.length === 0,
    `${failures.length} bad answers:\n${failures.slice(0, 20).join("\n")}`,
  );
});

it("uppercase ids name the same rows: own-id follow is a 400, a profile in capitals is found", async ({ env, gateway, token }) => {
  const auth = { authorization: `Bearer ${token}` };
  const self = await gateway.fetch(
    new Request(`http://x/functions/v1/profiles/${DEMO_USER_ID.toUpperCase()}/follow`, {
      method: "PUT",
      headers: auth,
    }),
  );
  assertEquals(self.status, 400, await self.clone().text());
  assert(!databaseInternals.test(await self.text()));
  const [{ id: other }] = await env.db.sql`
    select id::text from profiles where id <> ${DEMO_USER_ID} limit 1`;
  const found = await gateway.fetch(
    new Request(`http://x/functions/v1/profiles/${other.toUpperCase()}`, { headers: auth }),
  );
  assertEquals(found.status, 200, await found.clone().text());
  assertEquals((await found.json()).id, other);
});

it("searches: a query under 3 characters is a 400; pathological ones are bounded, never a 5xx", async ({ gateway, token }) => {
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

it("secret-key routes (metrics, jobs-worker) refuse every other credential: 401, nothing leaked", async ({ gateway, token }) => {
  const wrong = [
    {},
    { apikey: "sb_publishable_local_dev" },
    { apikey: "sb_secret_bad_input_tesT" },
    { apikey: "sb_secret_bad_input_test\u00a0" },
    { authorization: `Bearer ${token}` },
    { apikey: "x".repeat(10_000) },
  ];
  const routes = [
    ["GET", "/health/metrics"],
    ["GET", "/jobs-worker/metrics"],
    ["POST", "/jobs-worker/run"],
  ];
  for (const [method, path] of routes) {
    for (const headers of wrong) {
      const res = await gateway.fetch(
        new Request(`http://x/functions/v1${path}`, { method, headers: headers as HeadersInit }),
      );
      const text = await res.text();
      assertEquals(res.status, 401, `${method} ${path} with ${Object.keys(headers)}: ${text}`);
      assertEquals(res.headers.get("content-type"), "application/problem+json");
      assert(!/http_requests_total|process_resident/.test(text), text);
    }
  }
  // The public health answer names no dependency, breaker or version.
  const health = await (await gateway.fetch(new Request("http://x/functions/v1/health"))).json();
  assert(typeof health.status === "string", JSON.stringify(health));
  for (const key of ["checks", "breakers", "version"]) assert(!(key in health), key);
});

it("TRACE, TRACK and unknown methods: 405 problem+json from the gateway, on every function", async ({ gateway }) => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, gateway.fetch);
  try {
    for (const slug of gateway.slugs) {
      for (const method of ["TRACE", "TRACK", "CONNECT", "FOO"]) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
        const target = method === "CONNECT" ? "127.0.0.1:1" : `/functions/v1/${slug}`;
        await conn.write(
          new TextEncoder().encode(
            `${method} ${target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`,
          ),
        );
        let text = "";
        const buf = new Uint8Array(4096);
        for (let n; (n = await conn.read(buf)) !== null;) {
          text += new TextDecoder().decode(buf.subarray(0, n));
        }
        try {
          conn.close();
        } catch { /* closed by the server */ }
        assert(/^HTTP\/1\.1 4\d\d/.test(text), `${method} ${slug}: ${text.slice(0, 120)}`);
        assert(
          method === "CONNECT" ||
            (text.startsWith("HTTP/1.1 405") && text.includes("problem+json")),
          `${method} ${slug}: ${text.slice(0, 300)}`,
        );
      }
    }
  } finally {
    await server.shutdown();
  }
});

it("an Idempotency-Key reused with a body that only normalizes the same: 422", async ({ gateway, token }) => {
  const send = (body: string) =>
    gateway.fetch(
      new Request("http://x/functions/v1/recall-resolve", {
        method: "POST",
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": "application/json",
          "idempotency-key": "bad-input-reuse",
        },
        body,
      }),
    );
  const first = await send('{"text":"midnight velvet"}');
  assertEquals(first.status, 200, await first.clone().text());
  await first.body?.cancel();
  const replay = await send('{"text":"midnight velvet"}');
  assertEquals(replay.headers.get("idempotent-replayed"), "true");
  await replay.body?.cancel();
  for (const body of ['{"text":" midnight velvet "}', '{ "text": "midnight velvet" }']) {
    const res = await send(body);
    assertEquals(res.status, 422, body);
    assertEquals(res.headers.get("content-type"), "application/problem+json");
    await res.body?.cancel();
  }
});

it("bodies that never end or never arrive: 413 at the limit, 408 at the deadline, every write route", async (f) => {
  const { gateway, token, postId } = f;
  const writes = (await routes(f)).filter((r) => !["GET", "DELETE"].includes(r.method));
  assert(writes.length >= 8, `only ${writes.length} write routes`);
  const send = (route: { method: string; path: string }, body: ReadableStream<Uint8Array>) =>
    gateway.fetch(
      new Request(`http://x/functions/v1${route.path.replace(/\{[^}]+\}/g, postId)}`, {
        method: route.method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body,
      }),
    );
  const failures: string[] = [];
  for (const route of writes) {
    // chunked, endless (bounded at 16 MiB): answered 413 while still streaming
    let pulled = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(c) {
        if (pulled >= 16 * 1024 * 1024) return c.close();
        pulled += 65536;
        c.enqueue(new Uint8Array(65536).fill(32));
      },
    }, { highWaterMark: 0 });
    const res = await send(route, endless);
    const text = await res.text();
    if (res.status !== 413 || !res.headers.get("content-type")?.includes("problem+json")) {
      failures.push(
        `${route.method} ${route.path} endless body → ${res.status} ${text.slice(0, 120)}`,
      );
    } else if (pulled >= 16 * 1024 * 1024) {
      failures.push(`${route.method} ${route.path} read it all`);
    }
  }
  // a body that stops after one byte, on every write route at once: 408 at the deadline
  const started = performance.now();
  const stalled = await Promise.all(writes.map(async (route) => {
    const res = await send(
      route,
      new ReadableStream<Uint8Array>({ start: (c) => c.enqueue(new Uint8Array([123])) }),
    );
    return {
      route,
      status: res.status,
      type: res.headers.get("content-type"),
      text: await res.text(),
    };
  }));
  const ms = performance.now() - started;
  for (const r of stalled) {
    if (r.status !== 408 || r.type !== "application/problem+json") {
      failures.push(
        `${r.route.method} ${r.route.path} stalled body → ${r.status} ${r.text.slice(0, 120)}`,
      );
    }
  }
  assert(ms < 5000 + 3000, `stalled bodies answered after ${ms} ms`);
  assertEquals(failures, []);
});

it("a compressed request body (Content-Encoding: gzip, br…): 415 naming the header, unread, every write route", async (f) => {
  const { gateway, token, postId } = f;
  const writes = (await routes(f)).filter((r) => !["GET", "DELETE"].includes(r.method));
  const failures: string[] = [];
  for (const route of writes) {
    for (const coding of ["gzip", "br"]) {
      let pulls = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          pulls++;
          c.enqueue(new Uint8Array([0x1f, 0x8b, 8, 0]));
          c.close();
        },
      }, { highWaterMark: 0 });
      const res = await gateway.fetch(
        new Request(`http://x/functions/v1${route.path.replace(/\{[^}]+\}/g, postId)}`, {
          method: route.method,
          headers: {
            authorization: `Bearer ${token}`,
            "content-type": "application/json",
            "content-encoding": coding,
          },
          body,
        }),
      );
      const text = await res.text();
      const label = `${route.method} ${route.path} ${coding} → ${res.status} ${text.slice(0, 120)}`;
      if (res.status !== 415 || !res.headers.get("content-type")?.includes("problem+json")) {
        failures.push(label);
      } else if (!text.includes("Content-Encoding")) failures.push(`${label}: names no header`);
      else if (pulls > 0) failures.push(`${label}: the body was read`);
    }
  }
  assertEquals(failures, []);
});

it("a lone surrogate in any text field: 400 naming the field, nothing stored", async ({ env, gateway, token, postId }) => {
  // Written as JSON escapes, as a client's JSON.stringify would send a broken string.
  const lone = "\\ud800";
  const cases: [string, string, string, string][] = [
    ["POST", "/posts", `{"body":"before ${lone} after"}`, "body"],
    ["POST", `/posts/${postId}/replies`, `{"body":"${lone}"}`, "body"],
    ["PATCH", "/profiles/me", `{"display_name":"x${lone}"}`, "display_name"],
    ["PATCH", "/profiles/me", `{"bio":"\\udfff lone low"}`, "bio"],
    ["POST", "/recall-resolve", `{"text":"midnight ${lone} velvet"}`, "text"],
    [
      "POST",
      "/events",
      `{"events":[{"name":"app.opened","properties":{"k":"${lone}"}}]}`,
      "properties",
    ],
  ];
  const [{ before }] = await env.db.sql`select
    (select count(*) from posts)::int + (select count(*) from replies)::int +
    (select count(*) from events)::int as before`;
  const failures: string[] = [];
  for (const [method, path, body, field] of cases) {
    const res = await gateway.fetch(
      new Request(`http://x/functions/v1${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body,
      }),
    );
    const text = await res.text();
    const names = res.status === 400
      ? (JSON.parse(text).invalid_params ?? []).map((p: { name: string }) => p.name)
      : [];
    if (
      res.status !== 400 || !res.headers.get("content-type")?.includes("problem+json") ||
      !names.some((n: string) => n === field || n.endsWith(`.${field}`)) ||
      !text.includes("well-formed")
    ) {
      failures.push(`${method} ${path} → ${res.status} ${text.slice(0, 200)}`);
    }
  }
  assertEquals(failures, []);
  const [{ after }] = await env.db.sql`select
    (select count(*) from posts)::int + (select count(*) from replies)::int +
    (select count(*) from events)::int as after`;
  assertEquals(after, before);
  const [profile] = await env.db
    .sql`select display_name, bio from profiles where id = ${DEMO_USER_ID}`;
  assert(!`${profile.display_name}${profile.bio}`.includes("\ufffd"), JSON.stringify(profile));
});

it("an Idempotency-Key too long or not visible ASCII: 400 naming the header", async ({ gateway, token }) => {
  for (const key of ["k".repeat(256), "has space", "caf\xe9", "tab\there"]) {
    const res = await gateway.fetch(
      new Request("http://x/functions/v1/recall-resolve", {
        method: "POST",
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": "application/json",
          "idempotency-key": key,
        },
        body: '{"text":"midnight velvet"}',
      }),
    );
    const text = await res.text();
    assertEquals(res.status, 400, `${JSON.stringify(key)}: ${text}`);
    assertEquals(res.headers.get("content-type"), "application/problem+json");
    assertEquals(JSON.parse(text).invalid_params?.[0]?.name, "Idempotency-Key", text);
  }
  // The longest valid key is accepted.
  const res = await gateway.fetch(
    new Request("http://x/functions/v1/recall-resolve", {
      method: "POST",
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": "application/json",
        "idempotency-key": "k".repeat(255),
      },
      body: '{"text":"midnight velvet"}',
    }),
  );
  assertEquals(res.status, 200, await res.text());
});
