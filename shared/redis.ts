/**
 * The isolate's Upstash client. Redis is required (UPSTASH_REDIS_REST_URL/TOKEN; `npm start`
 * runs one locally): every limit, lease, breaker and cache runs its algorithm there, once.
 *
 * @module
 */
import { Redis } from "@upstash/redis";
import { config } from "./config.ts";

/** Thrown when a function needs Redis and none is configured. */
export const missingRedisMessage = "invalid environment:\n  UPSTASH_REDIS_REST_URL: required " +
  "(with UPSTASH_REDIS_REST_TOKEN): Redis holds every limit, lease, breaker and cache. " +
  "Locally, npm start runs redis-server behind the REST bridge";

/**
 * Few retries and a hard per-command timeout: the client's default (5 retries, ~4 s on a
 * refused connection) would outlast the caller's decision to fail open or closed.
 *
 * Null only when not configured: then {@link isolateRedis} throws, and functions refuse to
 * boot (see {@link requireRedis}). Kept nullable for shared/ratelimit.ts, which still has a
 * `redis: null` branch of its own.
 */
export const redis: Redis | null = config.redis
  ? new Redis({
    url: config.redis.url,
    token: config.redis.token,
    retry: { retries: 1, backoff: () => 20 },
    signal: () => AbortSignal.timeout(config.redisTimeoutMs),
    enableAutoPipelining: true,
    enableTelemetry: false,
  })
  : null;

/** The isolate's client; throws {@link missingRedisMessage} when Redis isn't configured. */
export function isolateRedis(): Redis {
  if (!redis) throw new Error(missingRedisMessage);
  return redis;
}

/** A function's boot check: fails naming the variable instead of at the first request. */
export function requireRedis(): void {
  isolateRedis();
}

/** A namespaced key: every key we write starts with `REDIS_PREFIX`. */
export function redisKey(...parts: string[]): string {
  return config.redisPrefix + parts.join(":");
}
