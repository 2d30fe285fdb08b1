import { assert, assertEquals } from "../../scripts/assert.ts";
import { functionTestEnv } from "../../scripts/test_env.ts";
import { freePort, startRedisServer } from "../../scripts/local_services.ts";
import { startRedisBridge } from "../../scripts/redis_bridge.ts";
import { it } from "../../scripts/test_http.ts";

// A dedicated redis-server, so the test can stop it without touching anyone else's Redis.
const redisServer = await startRedisServer(freePort());
const bridge = await startRedisBridge({ redisUrl: redisServer.url, token: "t0ken", port: 0 });
const env = await functionTestEnv({
  redis: false,
  env: { UPSTASH_REDIS_REST_URL: bridge.url, UPSTASH_REDIS_REST_TOKEN: "t0ken" },
});
const { app } = await import("./app.ts");
const { sql } = await import("../../shared/db.ts");

it("200 with db and redis ok, no auth needed", async () => {
  const res = await app.request("/health");
  assertEquals(res.status, 200);
  const body = await res.json();
  assertEquals(body.status, "ok");
  assertEquals(body.checks.db.ok, true);
  assertEquals(body.checks.redis.ok, true);
  assert(typeof body.checks.db.latency_ms === "number");
  assert(body.version);
});

it("lists every external API's circuit breaker", async () => {
  const body = await (await app.request("/health")).json();
  const names = body.breakers.map((b: { name: string }) => b.name).sort();
  assertEquals(names, ["acrcloud", "openai-chat", "openai-transcribe", "shazam"]);
  for (const b of body.breakers) assertEquals(b.state, "closed");
});

it("Prometheus metrics: request counts by route and status, latency histogram", async () => {
  const res = await app.request("/health/metrics");
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

it("503 within 2 s when Redis is down", async () => {
  await redisServer.stop();
  const start = performance.now();
  const res = await app.request("/health");
  const elapsed = performance.now() - start;
  assertEquals(res.status, 503);
  const body = await res.json();
  assertEquals(body.status, "degraded");
  assertEquals(body.checks.redis.ok, false);
  assertEquals(body.checks.db.ok, true);
  assert(elapsed < 2000, `took ${elapsed} ms`);
});

it("teardown", async () => {
  await sql.end();
  await bridge.close();
  await env.close();
});
