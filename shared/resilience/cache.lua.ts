/**
 * The cache's cross-isolate invalidation (shared/resilience/cache.ts), run with
 * shared/data/redis_script.ts.
 *
 * @module
 */
import { lua } from "../data/redis_script.ts";

/** Invalidations kept in the log; an isolate further behind drops its whole local tier. */
export const logLength = 1000;

/**
 * Invalidate: delete the value keys, bump the sequence, log what was invalidated.
 * KEYS: value keys (and a tag's set)…, seq, log. ARGV: kind (`key` | `tag`), name.
 * Returns the new sequence number.
 */
export const invalidateScript = lua<number>(
  "cache.invalidate",
  `
local n = #KEYS - 2
for i = 1, n do redis.call('DEL', KEYS[i]) end
local seq = redis.call('INCR', KEYS[n + 1])
redis.call('LPUSH', KEYS[n + 2], seq .. '\\t' .. ARGV[1] .. '\\t' .. ARGV[2])
redis.call('LTRIM', KEYS[n + 2], 0, ${logLength - 1})
return seq`,
);
