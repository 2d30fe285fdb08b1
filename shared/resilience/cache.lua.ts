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

/**
 * Invalidate tags, each read and dropped inside the script (one round trip, where reading a
 * tag's members first would be one more, and atomic: an entry tagged in between can't escape).
 * The members' value keys are built here, not passed in KEYS: the script has no
 * `allow-key-locking` flag, so Upstash runs it under its global lock as it does `invalidate`.
 * KEYS: seq, log, the tags' sets…. ARGV: the value keys' prefix, the tags' names….
 * Logs one line per tag; returns the new sequence number.
 */
export const invalidateTagsScript = lua<number>(
  "cache.invalidate_tags",
  `
local seq = 0
for i = 3, #KEYS do
  local members = redis.call('SMEMBERS', KEYS[i])
  for first = 1, #members, 500 do
    local batch = {}
    for j = first, math.min(first + 499, #members) do batch[#batch + 1] = ARGV[1] .. members[j] end
    redis.call('DEL', unpack(batch))
  end
  if #members > 0 then redis.call('DEL', KEYS[i]) end
  seq = redis.call('INCR', KEYS[1])
  redis.call('LPUSH', KEYS[2], seq .. '\\t' .. 'tag' .. '\\t' .. ARGV[i - 1])
end
redis.call('LTRIM', KEYS[2], 0, ${logLength - 1})
return seq`,
);
