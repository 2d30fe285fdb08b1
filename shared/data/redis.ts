/**
 * The Upstash client. Redis is required (UPSTASH_REDIS_REST_URL/TOKEN; `npm start` runs one
 * locally): every limit, lease, breaker and cache runs its algorithm there, once.
 *
 * @module
 */
import { Redis } from "@upstash/redis";
import type { Config } from "../config.ts";

/** Thrown when a function needs Redis and none is configured. */
export const missingRedisMessage = "invalid environment:\n  UPSTASH_REDIS_REST_URL: required " +
  "(with UPSTASH_REDIS_REST_TOKEN): Redis holds every limit, lease, breaker and cache. " +
  "Locally, npm start runs redis-server behind the REST bridge";

/**
 * The client of `config.redis`. Few retries and a hard per-command timeout: the client's
 * default (5 retries, ~4 s on a refused connection) would outlast the caller's decision to
 * fail open or closed. Throws {@link missingRedisMessage} when Redis isn't configured, so a
 * function refuses to boot instead of failing at its first request.
 */
export function createRedis(config: Pick<Config, "redis" | "redisTimeoutMs">): Redis {
  if (!config.redis) throw new Error(missingRedisMessage);
  return new Redis({
    url: config.redis.url,
    token: config.redis.token,
    retry: { retries: 1, backoff: () => 20 },
    signal: () => AbortSignal.timeout(config.redisTimeoutMs),
    enableAutoPipelining: true,
    enableTelemetry: false,
  });
}

/** Namespaced keys: `keys("rl", "feed")` is `<REDIS_PREFIX>rl:feed`. */
export type RedisKeys = (...parts: string[]) => string;

/** The key namespace of `prefix` (`REDIS_PREFIX`): every key we write starts with it. */
export function redisKeys(prefix: string): RedisKeys {
  return (...parts) => prefix + parts.join(":");
}
