import { createClient, FunctionsHttpError } from "@supabase/supabase-js";
import { assert, assertEquals } from "./assert.ts";
import { DEMO_USER_ID, seed } from "./seed.ts";
import { functionTestEnv } from "./test_env.ts";
import { it } from "./test_http.ts";

const env = await functionTestEnv();
await seed(env.db.sql, { users: 30, posts: 200 });
const { createGateway } = await import("./gateway.ts");
const { sql } = await import("../shared/db.ts");
const gateway = await createGateway({ jwks: env.keys.jwks });
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

it("an app reads its feed through supabase-js functions.invoke", async () => {
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

it("the gateway answers 401 before the function runs (verify_jwt = true)", async () => {
  for (const bearer of [undefined, "garbage", await env.keys.mint(DEMO_USER_ID, { ttlS: -5 })]) {
    const res = await fetch(`${baseUrl}/functions/v1/feed`, {
      headers: bearer ? { authorization: `Bearer ${bearer}` } : {},
    });
    assertEquals(res.status, 401);
    const body = await res.json();
    // the platform's shape, not our problem+json: the function never saw the request
    assertEquals(body.code, 401);
    assert(typeof body.message === "string");
  }
  const { error } = await client().functions.invoke("feed", { method: "GET" });
  assert(error instanceof FunctionsHttpError);
  assertEquals(error.context.status, 401);
});

it("health needs no token (verify_jwt = false)", async () => {
  const { data, error } = await client().functions.invoke("health", { method: "GET" });
  assertEquals(error, null);
  assertEquals(data.status, "ok");
});

it("serves the JWKS like Supabase Auth, and 404s unknown functions", async () => {
  const jwks = await (await fetch(`${baseUrl}/auth/v1/.well-known/jwks.json`)).json();
  assertEquals(jwks.keys[0].kid, env.keys.jwks.keys[0].kid);
  assertEquals(jwks.keys[0].d, undefined);
  const missing = await fetch(`${baseUrl}/functions/v1/nope`);
  assertEquals(missing.status, 404);
  await missing.body?.cancel();
});

it("CORS preflight is answered", async () => {
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

it("teardown", async () => {
  await server.shutdown();
  await sql.end();
  await env.close();
});
