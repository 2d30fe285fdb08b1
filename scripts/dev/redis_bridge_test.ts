/**
 * Tests for the Upstash REST bridge: the real `@upstash/redis` and `@upstash/ratelimit` clients
 * against the bridge in front of a real Redis (the test Redis: `TEST_REDIS_URL`, which `npm test`
 * sets, else `REDIS_URL`, else redis://127.0.0.1:6379).
 * Keys use a random per-run prefix and are removed afterwards (the Redis is shared).
 *
 * Run: `deno test -A scripts/dev/redis_bridge_test.ts`
 */
import nodeAssert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Redis } from "@upstash/redis";
import { Ratelimit } from "@upstash/ratelimit";
import { testRedisUrl } from "../testing/test_redis.ts";
import { freePort } from "./local_services.ts";
import { type RedisBridge, startRedisBridge, stripUpstashFlags } from "./redis_bridge.ts";

// Thin wrappers over node:assert (JSR's @std/assert is not reachable from this environment).
function assert(cond: unknown, message?: string): asserts cond {
  nodeAssert.ok(cond, message);
}
function assertEquals(
  actual: unknown,
  expected: unknown,
  message?: string,
): void {
  nodeAssert.deepStrictEqual(actual, expected, message);
}
async function assertRejects(
  fn: () => Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  errorClass?: new (...args: any[]) => Error,
  includes?: string,
): Promise<void> {
  await nodeAssert.rejects(fn, (err: unknown) => {
    if (errorClass) {
      nodeAssert.ok(
        err instanceof errorClass,
        `not a ${errorClass.name}: ${err}`,
      );
    }
    if (includes) {
      nodeAssert.ok(
        String(err).includes(includes),
        `"${err}" lacks "${includes}"`,
      );
    }
    return true;
  });
}

const REDIS_URL = testRedisUrl();
const TOKEN = "bridge-test-token";
const PREFIX = `bridge_test:${crypto.randomUUID()}:`;

type ClientOptions = {
  enableAutoPipelining?: boolean;
  responseEncoding?: false | "base64";
};

function client(bridge: RedisBridge, opts: ClientOptions = {}): Redis {
  return new Redis({
    url: bridge.url,
    token: bridge.token,
    // Fail on the first network error: retries would hide a hanging or dead bridge.
    retry: { retries: 0 },
    enableTelemetry: false,
    ...opts,
  });
}

/** Deletes every key of this run under `prefix` (SCAN, not KEYS: the Redis is shared). */
async function cleanup(redis: Redis, prefix = PREFIX): Promise<void> {
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, {
      match: `${prefix}*`,
      count: 500,
    });
    if (keys.length > 0) await redis.del(...keys);
    cursor = String(next);
  } while (cursor !== "0");
}

/** Starts a bridge, runs `fn`, cleans the run's keys, and always closes the bridge. */
async function withBridge(
  fn: (bridge: RedisBridge) => Promise<void>,
): Promise<void> {
  const bridge = await startRedisBridge({
    redisUrl: REDIS_URL,
    token: TOKEN,
    port: 0,
  });
  try {
    await fn(bridge);
  } finally {
    try {
      await cleanup(client(bridge));
    } finally {
      await bridge.close();
    }
  }
}

const matrix: { name: string; opts: ClientOptions }[] = [
  { name: "autopipeline, base64", opts: { enableAutoPipelining: true } },
  {
    name: "autopipeline, plain",
    opts: { enableAutoPipelining: true, responseEncoding: false },
  },
  { name: "no autopipeline, base64", opts: { enableAutoPipelining: false } },
  {
    name: "no autopipeline, plain",
    opts: { enableAutoPipelining: false, responseEncoding: false },
  },
];

for (const { name, opts } of matrix) {
  Deno.test(`@upstash/redis through the bridge (${name})`, () =>
    withBridge(async (bridge) => {
      const redis = client(bridge, opts);
      const k = (s: string) => `${PREFIX}${name}:${s}`;

      // Strings: ASCII, unicode (multi-byte + astral), a value that looks like base64, "OK".
      for (
        const value of [
          "hello",
          "héllo wörld ✓ 🚀 日本語",
          "T0s=",
          "OK",
          "",
          "a\nb\u0000c",
        ]
      ) {
        assertEquals(await redis.set(k("s"), value), "OK");
        assertEquals(await redis.get(k("s")), value);
      }
      // JSON-looking strings come back parsed (automaticDeserialization), exactly as on Upstash.
      await redis.set(k("json"), '{"a":1,"b":[true,null,"x"]}');
      assertEquals(await redis.get(k("json")), { a: 1, b: [true, null, "x"] });
      await redis.set(k("obj"), { nested: { n: 1.5 } });
      assertEquals(await redis.get(k("obj")), { nested: { n: 1.5 } });

      // Numbers.
      await redis.set(k("n"), 41);
      assertEquals(await redis.incr(k("n")), 42);
      assertEquals(await redis.get(k("n")), 42);
      assertEquals(await redis.incrbyfloat(k("f"), 1.25), 1.25);

      // Hashes, lists, sorted sets, mget.
      assertEquals(await redis.hset(k("h"), { a: "1", b: "zwei", c: "ü" }), 3);
      assertEquals(await redis.hgetall(k("h")), { a: 1, b: "zwei", c: "ü" });
      assertEquals(await redis.rpush(k("l"), "x", "y", "OK", "🚀"), 4);
      assertEquals(await redis.lrange(k("l"), 0, -1), ["x", "y", "OK", "🚀"]);
      await redis.zadd(k("z"), { score: 1.5, member: "one" }, {
        score: 2,
        member: "two",
      });
      assertEquals(await redis.zrange(k("z"), 0, -1, { withScores: true }), [
        "one",
        1.5,
        "two",
        2,
      ]);
      assertEquals(await redis.zscore(k("z"), "one"), 1.5);
      await redis.set(k("m1"), "v1");
      assertEquals(await redis.mget(k("m1"), k("missing"), k("n")), [
        "v1",
        null,
        42,
      ]);

      // Explicit pipeline and transaction.
      const p = redis.pipeline();
      p.set(k("p"), "pv");
      p.get(k("p"));
      p.incr(k("pc"));
      p.lrange(k("l"), 0, 1);
      assertEquals(await p.exec(), ["OK", "pv", 1, ["x", "y"]]);
      const tx = redis.multi();
      tx.incr(k("tc"));
      tx.incr(k("tc"));
      tx.get(k("p"));
      assertEquals(await tx.exec(), [1, 2, "pv"]);
      // Queue-time error aborts the whole transaction (non-2xx from /multi-exec).
      // HSET with no field/value pairs is a wrong-arity error at queue time.
      await assertRejects(() => redis.multi().set(k("t2"), "v").hset(k("t2"), {}).exec());
      assertEquals(await redis.exists(k("t2")), 0);

      // A Redis error is rejected with Redis' message.
      await redis.set(k("notint"), "abc");
      await assertRejects(
        () => redis.incr(k("notint")),
        Error,
        "ERR value is not an integer or out of range",
      );

      // EVAL, including a flagged script and mixed reply types.
      const script = `#!lua flags=allow-key-locking
        redis.call("SET", KEYS[1], ARGV[1])
        return {redis.call("GET", KEYS[1]), 7, "OK", false}`;
      assertEquals(await redis.eval(script, [k("e")], ["évalué"]), [
        "évalué",
        7,
        "OK",
        null,
      ]);
    }));
}

Deno.test("bad token -> 401 JSON, malformed body -> 400 JSON, path form works", () =>
  withBridge(async (bridge) => {
    let res = await fetch(bridge.url, {
      method: "POST",
      headers: { authorization: "Bearer wrong" },
      body: '["PING"]',
    });
    assertEquals(res.status, 401);
    assertEquals(await res.json(), { error: "Unauthorized" });

    res = await fetch(bridge.url, { method: "POST", body: '["PING"]' });
    assertEquals(res.status, 401);
    assertEquals(await res.json(), { error: "Unauthorized" });

    const auth = { authorization: `Bearer ${TOKEN}` };
    res = await fetch(bridge.url, {
      method: "POST",
      headers: auth,
      body: '["SET", "x"',
    });
    assertEquals(res.status, 400);
    assert(typeof (await res.json()).error === "string");

    res = await fetch(`${bridge.url}/pipeline`, {
      method: "POST",
      headers: auth,
      body: "{}",
    });
    assertEquals(res.status, 400);
    assert(typeof (await res.json()).error === "string");

    // Upstash path form and JSON scalars as arguments.
    const key = encodeURIComponent(`${PREFIX}path`);
    res = await fetch(`${bridge.url}/set/${key}/v%2F1`, { headers: auth });
    assertEquals(await res.json(), { result: "OK" });
    res = await fetch(`${bridge.url}/get/${key}`, { headers: auth });
    assertEquals(await res.json(), { result: "v/1" });
    res = await fetch(bridge.url, {
      method: "POST",
      headers: auth,
      body: JSON.stringify(["INCRBY", `${PREFIX}num`, 5]),
    });
    assertEquals(await res.json(), { result: 5 });
  }));

Deno.test("base64 encoding is binary-exact and never touches errors or integers", () =>
  withBridge(async (bridge) => {
    const headers = {
      authorization: `Bearer ${TOKEN}`,
      "upstash-encoding": "base64",
    };
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${bridge.url}${path}`, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() };
    };
    // Bytes that are not valid UTF-8, written by Lua so the bridge sees raw bulk bytes.
    const key = `${PREFIX}bin`;
    await post("/", [
      "EVAL",
      'redis.call("SET", KEYS[1], "\\255\\000\\128") return 1',
      "1",
      key,
    ]);
    assertEquals(await post("/", ["GET", key]), {
      status: 200,
      body: { result: "/wCA" },
    });
    assertEquals(await post("/", ["SET", key, "x"]), {
      status: 200,
      body: { result: "OK" },
    });
    assertEquals(
      await post("/pipeline", [["PING"], ["STRLEN", key], [
        "GET",
        `${PREFIX}none`,
      ]]),
      {
        status: 200,
        body: [{ result: "UE9ORw==" }, { result: 1 }, { result: null }],
      },
    );
    const err = await post("/", ["INCR", key]);
    assertEquals(err, {
      status: 400,
      body: { error: "ERR value is not an integer or out of range" },
    });
  }));

Deno.test("pipeline ordering under 200 concurrent auto-pipelined commands", () =>
  withBridge(async (bridge) => {
    const redis = client(bridge, { enableAutoPipelining: true });
    const before = bridge.stats.requests;
    const results = await Promise.all(
      Array.from(
        { length: 200 },
        (_, i) => redis.incrby(`${PREFIX}conc:${i}`, i + 1),
      ),
    );
    assertEquals(results, Array.from({ length: 200 }, (_, i) => i + 1));
    const requests = bridge.stats.requests - before;
    assert(
      requests < 200,
      `expected batching, got ${requests} requests for 200 commands`,
    );
    // Plain pipelines from several concurrent callers keep per-request order too.
    const values = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const p = redis.pipeline();
        for (let j = 0; j < 10; j++) p.incrby(`${PREFIX}conc:p${i}`, j);
        return await p.exec();
      }),
    );
    for (const v of values) {
      assertEquals(v, [0, 1, 3, 6, 10, 15, 21, 28, 36, 45]);
    }
  }));

Deno.test("ratelimit: sliding window counts, one HTTP request per warm limit()", () =>
  withBridge(async (bridge) => {
    const redis = client(bridge);
    const ratelimit = new Ratelimit({
      redis,
      limiter: Ratelimit.slidingWindow(5, "60 s"),
      prefix: `${PREFIX}rl:sw`,
      ephemeralCache: false,
      analytics: false,
    });
    const first = await ratelimit.limit("user");
    assert(first.success);
    const before = bridge.stats.requests;
    const second = await ratelimit.limit("user");
    assertEquals(
      bridge.stats.requests - before,
      1,
      "a warm limit() must be one round trip",
    );
    assert(second.success);
    assertEquals(second.remaining, 3);
    const rest = [];
    for (let i = 0; i < 5; i++) {
      rest.push((await ratelimit.limit("user")).success);
    }
    assertEquals(rest, [true, true, true, false, false]);
    assertEquals((await ratelimit.limit("other")).success, true);
  }));

Deno.test("ratelimit: fixed window and token bucket", () =>
  withBridge(async (bridge) => {
    const redis = client(bridge);
    const fixed = new Ratelimit({
      redis,
      limiter: Ratelimit.fixedWindow(3, "60 s"),
      prefix: `${PREFIX}rl:fw`,
      ephemeralCache: false,
    });
    const fw = [];
    for (let i = 0; i < 5; i++) fw.push((await fixed.limit("u")).success);
    assertEquals(fw, [true, true, true, false, false]);

    const bucket = new Ratelimit({
      redis,
      limiter: Ratelimit.tokenBucket(1, "60 s", 2),
      prefix: `${PREFIX}rl:tb`,
      ephemeralCache: false,
    });
    const tb = [];
    for (let i = 0; i < 4; i++) tb.push((await bucket.limit("u")).success);
    assertEquals(tb, [true, true, false, false]);
    const remaining = await bucket.getRemaining("u");
    assertEquals(remaining.remaining, 0);
  }));

Deno.test("scripts: SCRIPT LOAD returns the original sha, EVALSHA/EXISTS translate it", () =>
  withBridge(async (bridge) => {
    const redis = client(bridge);
    // A per-run script body so the first EVALSHA cannot be served from an earlier run's cache.
    const script = `#!lua flags=allow-key-locking,no-writes\nreturn {"${PREFIX}", ARGV[1]}`;
    const sha = createHash("sha1").update(script).digest("hex");
    assertEquals(await redis.scriptExists(sha), [0]);
    assertEquals(await redis.scriptLoad(script), sha);
    assertEquals(await redis.scriptExists(sha), [1]);
    assertEquals(
      await redis.multi().scriptLoad(script).scriptExists(sha).exec(),
      [sha, [1]],
    );
    assertEquals(await redis.evalsha(sha, [], ["arg"]), [PREFIX, "arg"]);
    // no-writes survived the strip: EVALSHA_RO accepts it.
    assertEquals(await redis.evalshaRo(sha, [], ["ro"]), [PREFIX, "ro"]);
    await assertRejects(
      () => redis.evalsha("0".repeat(40), [], []),
      Error,
      "NOSCRIPT",
    );
  }));

Deno.test("stripUpstashFlags keeps other flags and line numbers", () => {
  assertEquals(stripUpstashFlags("return 1"), null);
  assertEquals(stripUpstashFlags("#!lua flags=no-writes\nreturn 1"), null);
  assertEquals(
    stripUpstashFlags("#!lua flags=allow-key-locking\nreturn 1"),
    "#!lua\nreturn 1",
  );
  assertEquals(
    stripUpstashFlags(
      "#!lua flags=no-writes,allow-key-locking,allow-oom\nreturn 1",
    ),
    "#!lua flags=no-writes,allow-oom\nreturn 1",
  );
});

async function waitForPort(port: number, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch (err) {
      if (performance.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** A throwaway redis-server child on its own port, so the test may kill it. */
async function spawnRedis(port: number): Promise<Deno.ChildProcess> {
  const child = new Deno.Command("redis-server", {
    args: [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitForPort(port);
  } catch (err) {
    child.kill("SIGKILL");
    await child.status;
    throw err;
  }
  return child;
}

async function killRedis(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch { /* already exited */ }
  await child.status;
}

/** Asserts that a command through the bridge fails (rather than hangs) within 1.5 s. */
async function assertFastError(redis: Redis): Promise<void> {
  const t0 = performance.now();
  await assertRejects(() => redis.get("down:k"));
  const elapsed = performance.now() - t0;
  assert(elapsed < 1500, `error took ${elapsed.toFixed(0)} ms`);
}

Deno.test("Redis going away produces a fast error, not a hang; it recovers", async () => {
  const port = freePort();
  let server = await spawnRedis(port);
  let bridge: RedisBridge | undefined;
  try {
    bridge = await startRedisBridge({
      redisUrl: `redis://127.0.0.1:${port}`,
      token: TOKEN,
    });
    const redis = client(bridge);
    assertEquals(await redis.set("down:k", "v"), "OK");

    await killRedis(server);
    for (let i = 0; i < 3; i++) await assertFastError(redis);
    const res = await fetch(bridge.url, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}` },
      body: '["GET","down:k"]',
    });
    assertEquals(res.status, 503);
    assert(typeof (await res.json()).error === "string");

    // Redis comes back: the bridge reconnects on its own (retry backoff is capped at 1 s).
    server = await spawnRedis(port);
    const deadline = performance.now() + 5000;
    let answer: unknown;
    while (performance.now() < deadline) {
      try {
        answer = await redis.ping();
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    assertEquals(answer, "PONG");
  } finally {
    await killRedis(server);
    await bridge?.close();
  }
});

Deno.test("a Redis that stops answering (SIGSTOP) produces a fast error", async () => {
  const port = freePort();
  const server = await spawnRedis(port);
  let bridge: RedisBridge | undefined;
  try {
    bridge = await startRedisBridge({
      redisUrl: `redis://127.0.0.1:${port}`,
      token: TOKEN,
      socketTimeoutMs: 500,
    });
    const redis = client(bridge);
    assertEquals(await redis.set("down:k", "v"), "OK");
    server.kill("SIGSTOP"); // the socket stays open, nothing answers
    await assertFastError(redis);
    await assertFastError(redis);
  } finally {
    await killRedis(server);
    await bridge?.close();
  }
});

/** Milliseconds one PING through `url` takes. */
async function timedPing(url: string): Promise<number> {
  const start = performance.now();
  const res = await fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}` },
    body: '["PING"]',
  });
  assertEquals(await res.json(), { result: "PONG" });
  return performance.now() - start;
}

Deno.test("delayMs holds every answer (a slow Redis), and can be changed while running", () =>
  withBridge(async (bridge) => {
    // Only the lower bound is the behaviour: how fast an undelayed answer is depends on the box.
    assertEquals(bridge.delayMs, 0);
    await timedPing(bridge.url); // answers with no delay set
    bridge.delayMs = 200;
    const slow = await timedPing(bridge.url);
    assert(slow >= 195, `answered after ${slow.toFixed(0)} ms`);
    bridge.delayMs = 0;
    assertEquals(bridge.delayMs, 0);
    await timedPing(bridge.url); // and answers again once it is back to 0
    await assertRejects(() => Promise.resolve().then(() => bridge.delayMs = -1), RangeError);
  }));

Deno.test("close lets delayed requests through instead of waiting out the delay", async () => {
  const bridge = await startRedisBridge({ redisUrl: REDIS_URL, token: TOKEN, port: 0 });
  bridge.delayMs = 10_000;
  const held = timedPing(bridge.url);
  while (bridge.stats.requests === 0) await new Promise((r) => setTimeout(r, 5));
  const start = performance.now();
  await bridge.close();
  const closeMs = performance.now() - start;
  assert(closeMs < 2000, `close took ${closeMs.toFixed(0)} ms`);
  assert(await held < 5000, "the held request was answered"); // PONG, checked in timedPing
});

Deno.test("the standalone bridge reads BRIDGE_DELAY_MS", async () => {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./redis_bridge.ts", import.meta.url).pathname],
    env: {
      REDIS_URL,
      UPSTASH_REDIS_REST_TOKEN: TOKEN,
      BRIDGE_PORT: String(port),
      BRIDGE_DELAY_MS: "250",
    },
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitForPort(port, 15_000);
    const ms = await timedPing(`http://127.0.0.1:${port}`);
    assert(ms >= 245, `answered after ${ms.toFixed(0)} ms`);
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
});
