import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { startRedisBridge } from "../../scripts/dev/redis_bridge.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { testRedisUrl } from "../../scripts/testing/test_redis.ts";
import { createApp } from "./app.ts";

const secret = `sb_secret_health_${crypto.randomUUID().replaceAll("-", "")}`;

/**
 * The app on a Redis bridge of its own (to the test Redis), so the last case can take Redis
 * away from the running app, without touching anyone else's Redis.
 */
async function setup() {
  const bridge = await startRedisBridge({
    redisUrl: testRedisUrl(),
    token: crypto.randomUUID(),
    port: 0,
  });
  const env = await functionTestEnv({
    env: {
      UPSTASH_REDIS_REST_URL: bridge.url,
      UPSTASH_REDIS_REST_TOKEN: bridge.token,
      SUPABASE_SECRET_KEYS: JSON.stringify({ default: secret }),
    },
  });
  const app = createApp(env.deps);
  const close = async () => {
    await bridge.close();
    await env.close();
  };
  return { env, app, bridge, close };
}
const it = suite("health", setup);

const withKey = { headers: { apikey: secret } };

it("200 with db and redis ok, no auth needed; the public body is the status only", async ({ app }) => {
  const anonymous = await app.request("/health");
  assertEquals(anonymous.status, 200);
  assertEquals(await anonymous.json(), { status: "ok" });
  // A publishable key or a wrong secret is no secret key: still the status only.
  for (const apikey of ["sb_publishable_x", "sb_secret_wrong"]) {
    const res = await app.request("/health", { headers: { apikey } });
    assertEquals(await res.json(), { status: "ok" });
  }
  const res = await app.request("/health", withKey);
  assertEquals(res.status, 200);
  const body = await res.json();
  assertEquals(body.status, "ok");
  assertEquals(body.checks.db.ok, true);
  assertEquals(body.checks.redis.ok, true);
  assert(typeof body.checks.db.latency_ms === "number");
  assert(body.version);
});

it("lists every external API's circuit breaker", async ({ app }) => {
  const body = await (await app.request("/health", withKey)).json();
  const names = body.breakers.map((b: { name: string }) => b.name).sort();
  assertEquals(names, ["acrcloud", "openai-chat", "openai-transcribe", "shazam"]);
  for (const b of body.breakers) assertEquals(b.state, "closed");
});

it("metrics need the secret key: 401 without one, or with a publishable or wrong key", async ({ app }) => {
  const attempts: Record<string, string>[] = [
    {},
    { apikey: "sb_publishable_x" },
    { apikey: "sb_secret_wrong" },
  ];
  for (const headers of attempts) {
    const res = await app.request("/health/metrics", { headers });
    assertEquals(res.status, 401);
    assert(res.headers.get("content-type")?.startsWith("application/problem+json"));
    const text = await res.text();
    assert(!text.includes("http_requests_total"), text);
  }
  const bearer = await app.request("/health/metrics", {
    headers: { authorization: `Bearer ${secret}` },
  });
  assertEquals(bearer.status, 200);
  await bearer.body?.cancel();
});

it("metrics include the process's RSS and the app's open database connections", async ({ env, app }) => {
  await env.deps.db.sql`select 1`; // the isolate's pool holds an open connection now
  const text = await (await app.request("/health/metrics", withKey)).text();
  const rss = Number(text.match(/^process_resident_memory_bytes (\d+)$/m)?.[1]);
  assert(rss > 10_000_000, `rss ${rss}\n${text}`);
  assert(text.includes("# TYPE db_connections gauge"), text);
  // The health check's own connection, at least, is open (it just answered /health).
  const open = Number(text.match(/^db_connections_total_open (\d+)$/m)?.[1]);
  assert(open >= 1, `db_connections_total_open ${open}\n${text}`);
  const pool = text.match(
    /^db_connections\{application_name="rockout-edge",state="[a-z ]+"\} (\d+)$/m,
  );
  assert(Number(pool?.[1]) >= 1, text);
});

it("Prometheus metrics: request counts by route and status, latency histogram", async ({ app }) => {
  const res = await app.request("/health/metrics", withKey);
  assertEquals(res.status, 200);
  assert(res.headers.get("content-type")?.startsWith("text/plain"));
  const text = await res.text();
  assert(
    /http_requests_total\{[^}]*function="health"[^}]*route="\/health"[^}]*status="200"[^}]*\} [1-9]/
      .test(text),
    text,
  );
  assert(text.includes("# TYPE http_request_duration_ms histogram"), text);
  assert(text.includes("# TYPE queue_depth gauge"), text);
  assert(/http_request_duration_ms_bucket\{.*le="\+Inf"\} \d+/.test(text), text);
});

it("503 within 2 s when Redis is down", async ({ app, bridge }) => {
  await bridge.close(); // the app's Redis is gone: its REST endpoint refuses connections
  const start = performance.now();
  const res = await app.request("/health");
  const elapsed = performance.now() - start;
  assertEquals(res.status, 503);
  assertEquals(await res.json(), { status: "degraded" });
  const body = await (await app.request("/health", withKey)).json();
  assertEquals(body.status, "degraded");
  assertEquals(body.checks.redis.ok, false);
  assertEquals(body.checks.db.ok, true);
  assert(elapsed < 2000, `took ${elapsed} ms`);
});
