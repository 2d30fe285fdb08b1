/**
 * Tests of the Redis breaker store (shared/resilience/breaker_store.ts) through the breaker:
 * round trips per call, auto-pipelining, the scripts' first load, and two processes sharing one
 * breaker. Against a real Redis (TEST_REDIS_URL) behind the Upstash REST bridge.
 *
 * Run: `TEST_REDIS_URL=redis://127.0.0.1:6379 deno test -A shared/resilience/breaker_store_test.ts`
 */
import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { freePort, startRedisServer } from "../../scripts/dev/local_services.ts";
import { assertOpenError, calls, MIN, success, T0 } from "../../scripts/testing/test_breaker.ts";
import { testRedis } from "../../scripts/testing/test_redis.ts";
import { CircuitBreaker, type Permit, RedisBreakerStore } from "./breaker.ts";

Deno.test("redis: round trips per call in each state", async () => {
  const t = await testRedis();
  try {
    let now = T0;
    const b = new CircuitBreaker({
      name: "rt",
      store: new RedisBreakerStore(t.redis, `${t.prefix}breaker:`),
      clock: () => now,
    });
    await success(b); // warms the scripts (first use: EVALSHA → NOSCRIPT → EVAL)
    const count = async (work: () => Promise<unknown>) => {
      const before = t.bridge.stats.requests;
      await work();
      return t.bridge.stats.requests - before;
    };
    let permit: Permit | undefined;
    assertEquals(await count(async () => permit = await b.acquire()), 1, "closed acquire");
    assertEquals(await count(() => b.record("success", permit!)), 1, "closed record");
    // The closed acquire goes out in the caller's tick: it shares one request with a command
    // issued next to it (e.g. the rate limit check).
    assertEquals(
      await count(() => Promise.all([b.acquire(), t.redis.incr(`${t.prefix}other`)])),
      1,
      "acquire + another command in one request",
    );
    await calls(b, "FFFFF");
    assertEquals(await count(() => b.acquire().catch(() => {})), 0, "open acquire");
    now += MIN;
    assertEquals(await count(async () => permit = await b.acquire()), 1, "half-open acquire");
    assertEquals(await count(() => b.acquire().catch(() => {})), 1, "half-open, no permit left");
    assertEquals(await count(() => b.record("success", permit!)), 1, "half-open record");
    assertEquals(await count(() => b.state()), 1, "state()");
  } finally {
    await t.close();
  }
});

Deno.test("redis: a fresh server (no scripts loaded) costs EVALSHA → NOSCRIPT → EVAL once", async () => {
  // A redis-server of our own: the shared one may have our scripts loaded already, and
  // SCRIPT FLUSH there would touch other people's scripts.
  const server = await startRedisServer(freePort());
  const t = await testRedis(server.url);
  try {
    const b = new CircuitBreaker({
      name: "cold",
      store: new RedisBreakerStore(t.redis, `${t.prefix}breaker:`),
    });
    const count = async (work: () => Promise<unknown>) => {
      const before = t.bridge.stats.requests;
      await work();
      return t.bridge.stats.requests - before;
    };
    assertEquals(await count(() => b.acquire()), 2, "cold acquire");
    assertEquals(await count(() => b.acquire()), 1, "warm acquire");
    const permit = await b.acquire();
    assertEquals(await count(() => b.record("failure", permit)), 2, "cold record");
    assertEquals((await b.state()).failures, 1, "the failure counted once");
  } finally {
    await t.close();
    await server.stop();
  }
});

Deno.test("redis: two processes share one breaker", async () => {
  const t = await testRedis();
  try {
    const child = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("./testdata/breaker_child.ts", import.meta.url).pathname,
        "x",
        "5",
      ],
      env: {
        DATABASE_URL: "postgres://unit-test@127.0.0.1:1/none",
        SUPABASE_JWKS: '{"keys":[]}',
        UPSTASH_REDIS_REST_URL: t.bridge.url,
        UPSTASH_REDIS_REST_TOKEN: t.bridge.token,
        REDIS_PREFIX: t.prefix,
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(child.stdout);
    assertEquals(child.code, 0, new TextDecoder().decode(child.stderr));
    const lines = stdout.trim().split("\n").map((l) => JSON.parse(l));
    assertEquals(lines[0], {
      msg: "breaker transition",
      breaker: "x",
      from: "closed",
      to: "open",
      generation: 1,
    });
    assertEquals(lines.at(-2), {
      same: true,
      // deps declare the OpenAI APIs (and so their breakers) when they are built
      listed: ["openai-chat", "openai-transcribe", "x", "acrcloud", "shazam"],
    });
    assertEquals(lines.at(-1).state, "open");

    // This process: a fresh instance with nothing cached, same key as the child's factory used.
    const b = new CircuitBreaker({
      name: "x",
      store: new RedisBreakerStore(t.redis, `${t.prefix}breaker:`),
    });
    assertEquals(b.cachedOpenUntil, 0);
    const s = await b.state();
    assertEquals([s.state, s.generation], ["open", 1]);
    let called = false;
    const err = await assertOpenError(b.run(() => Promise.resolve(called = true)));
    assert(!called);
    assert(err.retryAfterMs > 50_000 && err.retryAfterMs <= MIN, `retry after ${err.retryAfterMs}`);
  } finally {
    await t.close();
  }
});
