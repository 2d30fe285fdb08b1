/**
 * A Redis for contract tests: the real one (TEST_REDIS_URL / REDIS_URL) behind the Upstash
 * REST bridge, reached with the production client, under a key prefix of its own that is
 * deleted afterwards.
 *
 * @module
 */
import { Redis } from "@upstash/redis";
import { type RedisBridge, startRedisBridge } from "../dev/redis_bridge.ts";

/** What a contract test gets. */
export interface TestRedis {
  /** A client configured like production's (auto-pipelining, 1 retry, timeout). */
  redis: Redis;
  /** Unique to this test run, ends with `:`. */
  prefix: string;
  bridge: RedisBridge;
  close(): Promise<void>;
}

/** The Redis server tests use. */
export function testRedisUrl(): string {
  return Deno.env.get("TEST_REDIS_URL") ?? Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379";
}

/** Starts a bridge in front of `redisUrl` (default: the test Redis) and a client for it. */
export async function testRedis(redisUrl = testRedisUrl()): Promise<TestRedis> {
  const bridge = await startRedisBridge({ redisUrl, token: crypto.randomUUID(), port: 0 });
  const redis = new Redis({
    url: bridge.url,
    token: bridge.token,
    retry: { retries: 1, backoff: () => 20 },
    enableAutoPipelining: true,
    enableTelemetry: false,
  });
  const prefix = `test:${crypto.randomUUID().slice(0, 8)}:`;
  return {
    redis,
    prefix,
    bridge,
    async close() {
      await deleteKeys(redis, `${prefix}*`).catch(() => {});
      await bridge.close();
    },
  };
}

/** Deletes every key matching `pattern` (SCAN, never KEYS). */
export async function deleteKeys(redis: Redis, pattern: string): Promise<void> {
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, { match: pattern, count: 500 });
    if (keys.length) await redis.del(...keys);
    cursor = String(next);
  } while (cursor !== "0");
}
