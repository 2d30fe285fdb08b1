/**
 * Every write route of every function has a rate limit, and every anonymous read is limited
 * by `ANON_READ_RATE_LIMIT_PER_MIN` per client IP. Routes are read from each function's
 * OpenAPI document, so a new route without a limit fails here without touching this file
 * (and a new function too: the gateway's list of apps is checked against functions/).
 *
 * @module
 */
import { assert, assertEquals } from "../scripts/testing/assert.ts";
import { functionApps, functionSlugs } from "../scripts/dev/gateway.ts";
import { DEMO_USER_ID, seed } from "../scripts/testing/seed.ts";
import { functionTestEnv } from "../scripts/testing/test_env.ts";
import { suite } from "../scripts/testing/test_http.ts";
import type { App } from "../shared/http/app.ts";

const secret = "sb_secret_rate_limits_test";

const it = suite("rate limits", async () => {
  const env = await functionTestEnv({
    env: {
      ANON_READ_RATE_LIMIT_PER_MIN: "3",
      PROFILE_EDIT_RATE_LIMIT_PER_MIN: "2",
      JOBS_RUN_RATE_LIMIT_PER_MIN: "4",
      SUPABASE_SECRET_KEYS: JSON.stringify({ default: secret }),
    },
  });
  await seed(env.db.sql, { users: 10, posts: 20, seed: 3, songs: 0 });
  const token = await env.keys.mint(DEMO_USER_ID);
  // Every function of functions/, each its own app on the one deps (as the gateway mounts them).
  assertEquals(Object.keys(functionApps).sort(), functionSlugs());
  const apps = new Map<string, App>(
    Object.entries(functionApps).map(([slug, createApp]) => [slug, createApp(env.deps)]),
  );
  return { env, token, apps, close: () => env.close() };
});
type Fixture = Parameters<Parameters<typeof it>[1]>[0];

let ipSeq = 0;
/** A client IP of its own, in every header a gateway might use to say it. */
function client(ip = `198.51.100.${++ipSeq}`): Record<string, string> {
  return { "x-forwarded-for": ip, "x-real-ip": ip, "cf-connecting-ip": ip };
}

interface Operation {
  slug: string;
  method: string;
  path: string;
  security: Record<string, unknown>[];
}

/** Every documented operation (the document itself is read from a fresh IP each time). */
async function operations({ apps }: Fixture): Promise<Operation[]> {
  const all: Operation[] = [];
  for (const [slug, app] of apps) {
    const res = await app.request(`/${slug}/openapi.json`, { headers: client() });
    assertEquals(res.status, 200, slug);
    const doc = await res.json();
    for (
      const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, Operation>>)
    ) {
      for (const [method, op] of Object.entries(ops)) {
        all.push({ slug, method: method.toUpperCase(), path, security: op.security ?? [] });
      }
    }
  }
  return all;
}

/** Sends `op` as its intended caller would (user token or secret key), with a dummy body. */
async function send(
  { apps, token }: Fixture,
  op: Operation,
  headers: Record<string, string> = {},
): Promise<Response> {
  const concrete = op.path.replace(/\{[^}]+\}/g, crypto.randomUUID());
  const usesKey = op.security.some((s) => "apikey" in s);
  const auth: Record<string, string> = usesKey
    ? { apikey: secret }
    : { authorization: `Bearer ${token}` };
  const write = op.method !== "GET";
  return await apps.get(op.slug)!.request(concrete, {
    method: op.method,
    headers: { ...auth, ...headers, ...(write ? { "content-type": "application/json" } : {}) },
    body: write && op.method !== "DELETE" ? "{}" : undefined,
  });
}

it("every write route (POST, PUT, PATCH, DELETE) of every function answers under a rate limit", async (f) => {
  const writes = (await operations(f)).filter((op) => op.method !== "GET");
  assert(writes.length >= 12, `only ${writes.length} write routes documented`);
  const unlimited: string[] = [];
  for (const op of writes) {
    const res = await send(f, op, client());
    await res.body?.cancel();
    if (!res.headers.get("ratelimit-policy")) {
      unlimited.push(`${op.method} ${op.path} (${res.status})`);
    }
    assert(res.status < 500, `${op.method} ${op.path} answered ${res.status}`);
  }
  assertEquals(unlimited, [], "write routes without a rate limit");
});

it("every anonymous read (no security scheme) is limited per client IP", async (f) => {
  const { apps } = f;
  const reads = (await operations(f)).filter((op) => op.method === "GET" && !op.security.length);
  assert(reads.some((op) => op.path === "/health"), "GET /health is an anonymous read");
  const targets = [
    ...reads.map((op) => op.path),
    ...[...apps.keys()].map((slug) => `/${slug}/openapi.json`), // every function's document
  ];
  for (const path of targets) {
    const slug = path.split("/")[1];
    const ip = client();
    for (let i = 0; i < 3; i++) {
      const res = await apps.get(slug)!.request(path, { headers: ip });
      await res.body?.cancel();
      assertEquals(res.headers.get("ratelimit-policy"), `"anon-read";q=3;w=60`, path);
      assert(res.status !== 429, `${path}: request ${i + 1} of 3 refused`);
    }
    const fourth = await apps.get(slug)!.request(path, { headers: ip });
    assertEquals(fourth.status, 429, path);
    assertEquals(fourth.headers.get("content-type"), "application/problem+json");
    assert(Number(fourth.headers.get("retry-after")) >= 1, "Retry-After");
    assertEquals((await fourth.json()).policy, "anon-read");
    // Another client is not affected.
    const other = await apps.get(slug)!.request(path, { headers: client() });
    await other.body?.cancel();
    assert(other.status !== 429, `${path}: a different IP was refused`);
  }
});

it("PATCH /profiles/me: PROFILE_EDIT_RATE_LIMIT_PER_MIN per user, then 429", async ({ env, apps }) => {
  const [{ id }] = await env.db.sql`select id from profiles where id <> ${DEMO_USER_ID} limit 1`;
  const userToken = await env.keys.mint(id);
  const patch = () =>
    apps.get("profiles")!.request("/profiles/me", {
      method: "PATCH",
      headers: { authorization: `Bearer ${userToken}`, "content-type": "application/json" },
      body: JSON.stringify({ bio: "limits" }),
    });
  for (let i = 0; i < 2; i++) assertEquals((await patch()).status, 200);
  const limited = await patch();
  assertEquals(limited.status, 429);
  assertEquals(limited.headers.get("ratelimit-policy"), `"profile-edits";q=2;w=60`);
  assert(Number(limited.headers.get("retry-after")) >= 1);
});

it("jobs-worker runs and digests: JOBS_RUN_RATE_LIMIT_PER_MIN per secret key, then 429", async ({ apps }) => {
  const statuses: number[] = [];
  for (let i = 0; i < 6; i++) {
    const res = await apps.get("jobs-worker")!.request("/jobs-worker/digests", {
      method: "POST",
      headers: { apikey: secret, "content-type": "application/json" },
      body: "{}",
    });
    await res.body?.cancel();
    statuses.push(res.status);
  }
  // The audit above spent some of the 4; what is left passes, then 429 and only 429.
  const first = statuses.indexOf(429);
  assert(first >= 0 && first <= 4, JSON.stringify(statuses));
  assert(statuses.slice(0, first).every((s) => s < 500), JSON.stringify(statuses));
  assert(statuses.slice(first).every((s) => s === 429), JSON.stringify(statuses));
});
