import { createClient, FunctionsHttpError } from "@supabase/supabase-js";
import { assert, assertEquals } from "../testing/assert.ts";
import { DEMO_USER_ID, seed } from "../testing/seed.ts";
import { functionTestEnv } from "../testing/test_env.ts";
import { suite } from "../testing/test_http.ts";
import { createGateway, functionSlugs } from "./gateway.ts";

const it = suite("gateway", async () => {
  const env = await functionTestEnv();
  await seed(env.db.sql, { users: 30, posts: 200 });
  const gateway = await createGateway({ deps: env.deps, jwks: env.keys.jwks });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, gateway.fetch);
  const baseUrl = `http://127.0.0.1:${server.addr.port}`;
  const token = await env.keys.mint(DEMO_USER_ID);

  /** The app's client, as RockOut's apps build it. */
  function client(accessToken?: string) {
    return createClient(baseUrl, "sb_publishable_local_dev", {
      auth: { persistSession: false, autoRefreshToken: false },
      ...(accessToken ? { accessToken: () => Promise.resolve(accessToken) } : {}),
    });
  }
  return {
    env,
    gateway,
    server,
    baseUrl,
    token,
    client,
    async close() {
      await server.shutdown();
      await env.close();
    },
  };
});

it("mounts every function of functions/ (its static list misses none)", ({ gateway }) => {
  assertEquals(gateway.slugs, functionSlugs());
});

it("an app reads its feed through supabase-js functions.invoke", async ({ client, token }) => {
  const { data, error } = await client(token).functions.invoke("feed?kind=following&limit=5", {
    method: "GET",
  });
  assertEquals(error, null);
  assertEquals(data.items.length, 5);
  assert(typeof data.next_cursor === "string");
  const next = await client(token).functions.invoke(
    `feed?kind=following&limit=5&cursor=${data.next_cursor}`,
    {
      method: "GET",
    },
  );
  assertEquals(next.error, null);
  assert(
    next.data.items.every((i: { id: string }) =>
      !data.items.some((j: { id: string }) => j.id === i.id)
    ),
  );
});

it("the gateway answers 401 before the function runs (verify_jwt = true), as problem+json", async ({ env, baseUrl, client, token }) => {
  for (
    const authorization of [
      undefined,
      "Bearer garbage",
      `Bearer ${await env.keys.mint(DEMO_USER_ID, { ttlS: -5 })}`,
      `Bearer ${token} junk`,
      `Bearer ${await env.keys.mint(DEMO_USER_ID, { omit: ["exp"] })}`,
      "Bearer sb_publishable_local_dev", // not a JWT: the platform's verify_jwt refuses it
    ]
  ) {
    const res = await fetch(`${baseUrl}/functions/v1/feed`, {
      headers: authorization ? { authorization, origin: "https://app.example" } : {},
    });
    assertEquals(res.status, 401, authorization);
    assertEquals(res.headers.get("content-type"), "application/problem+json");
    const body = await res.json();
    assertEquals(Object.keys(body).sort(), [
      "code",
      "detail",
      "request_id",
      "status",
      "title",
      "type",
    ]);
    assertEquals([body.status, body.code], [401, "unauthorized"]);
    assertEquals(body.request_id, res.headers.get("x-request-id"));
    assert(res.headers.get("access-control-allow-origin"), "browsers can read it");
    if (authorization?.includes("sb_publishable")) assert(body.detail.includes("signed-in user"));
  }
  const { error } = await client().functions.invoke("feed", { method: "GET" });
  assert(error instanceof FunctionsHttpError);
  assertEquals(error.context.status, 401);
});

it("a signed-out supabase-js client is anonymous where anonymous callers are allowed", async ({ env, baseUrl }) => {
  const anonKey = await env.keys.mintAnon();
  // 2.x sends a legacy anon key as its bearer, a publishable key only as `apikey`.
  for (const key of [anonKey, "sb_publishable_local_dev"]) {
    const { data, error } = await createClient(baseUrl, key, {
      auth: { persistSession: false, autoRefreshToken: false },
    }).functions.invoke("events", { body: { events: [{ name: "app.opened" }] } });
    assertEquals(error, null, key.slice(0, 20));
    assertEquals(data, { accepted: 1 });
  }
  // Older clients (and supabase.fetch) send the publishable key as the bearer too.
  const res = await fetch(`${baseUrl}/functions/v1/events`, {
    method: "POST",
    headers: {
      authorization: "Bearer sb_publishable_local_dev",
      apikey: "sb_publishable_local_dev",
      "content-type": "application/json",
    },
    body: JSON.stringify({ events: [{ name: "app.opened" }] }),
  });
  assertEquals(res.status, 202, await res.clone().text());
  await res.body?.cancel();
  // A user-only route says a user token is needed (the anon JWT passes verify_jwt).
  const feed = await fetch(`${baseUrl}/functions/v1/feed`, {
    headers: { authorization: `Bearer ${anonKey}` },
  });
  assertEquals(feed.status, 401);
  assert((await feed.json()).detail.includes("signed-in user"));
});

it("TRACE and other methods no function serves: 405 problem+json with Allow", async ({ server }) => {
  for (const method of ["TRACE", "TRACK", "PROPFIND"]) {
    const res = await rawRequest(server.addr.port, `${method} /functions/v1/events HTTP/1.1`);
    assert(res.startsWith("HTTP/1.1 405"), `${method}: ${res.slice(0, 200)}`);
    assert(/content-type: application\/problem\+json/i.test(res), res);
    assert(/allow: GET, HEAD, POST/i.test(res), res);
    assert(res.includes('"code":"method_not_allowed"'), res);
  }
});

/** One raw HTTP/1.1 exchange (fetch refuses to send TRACE). */
async function rawRequest(port: number, requestLine: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(
      new TextEncoder().encode(`${requestLine}\r\nhost: x\r\nconnection: close\r\n\r\n`),
    );
    let text = "";
    const buf = new Uint8Array(4096);
    for (let n; (n = await conn.read(buf)) !== null;) {
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text;
  } finally {
    try {
      conn.close();
    } catch { /* closed by the server */ }
  }
}

it("health needs no token (verify_jwt = false)", async ({ client }) => {
  const { data, error } = await client().functions.invoke("health", { method: "GET" });
  assertEquals(error, null);
  assertEquals(data.status, "ok");
});

it("serves the JWKS like Supabase Auth, and 404s unknown functions as problem+json", async ({ env, baseUrl }) => {
  const jwks = await (await fetch(`${baseUrl}/auth/v1/.well-known/jwks.json`)).json();
  assertEquals(jwks.keys[0].kid, env.keys.jwks.keys[0].kid);
  assertEquals(jwks.keys[0].d, undefined);
  for (const path of ["/functions/v1/nope", "/elsewhere"]) {
    const missing = await fetch(`${baseUrl}${path}`);
    assertEquals(missing.status, 404);
    assertEquals(missing.headers.get("content-type"), "application/problem+json");
    const body = await missing.json();
    assertEquals([body.status, body.code, body.title], [404, "not_found", "Not found"]);
  }
});

it("CORS preflight is answered", async ({ baseUrl }) => {
  const res = await fetch(`${baseUrl}/functions/v1/feed`, {
    method: "OPTIONS",
    headers: {
      origin: "https://app.rockout.example",
      "access-control-request-method": "GET",
      "access-control-request-headers": "authorization",
    },
  });
  assertEquals(res.status, 204);
  assert(res.headers.get("access-control-allow-origin"));
  assert(res.headers.get("access-control-allow-headers")?.includes("authorization"));
  await res.body?.cancel();
});
