/**
 * The isolate's Upstash client, or null when no Redis is configured (the embedded default:
 * callers then use their in-process stores, and limits are per process).
 *
 * @module
 */
import { Redis } from "@upstash/redis";
import { config } from "./config.ts";

/**
 * Few retries and a hard per-command timeout: the client's default (5 retries, ~4 s on a
 * refused connection) would outlast the caller's decision to fail open or closed.
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

/** A namespaced key: every key we write starts with `REDIS_PREFIX`. */
export function redisKey(...parts: string[]): string {
  return config.redisPrefix + parts.join(":");
}

if (!redis) {
  console.warn(
    "[rockout] no Redis configured (UPSTASH_REDIS_REST_URL/TOKEN): caches, rate limits and breakers are per process",
  );
}
