/**
 * The lease algorithm (shared/resilience/lease.ts), run with shared/data/redis_script.ts.
 *
 * @module
 */
import { lua } from "../data/redis_script.ts";

/**
 * Lua: `acquireLease(key, now, ttl, limit, id)` → {1, 0} when granted, {0, ms until the
 * earliest lease expires} when full. The set's own TTL follows its longest lease, so an
 * abandoned key vanishes with it. A function, so that a script deciding more than the slot
 * (shared/resilience/coalesce_slot.lua.ts) runs this very algorithm in its own round trip.
 */
export const LUA_ACQUIRE_LEASE = `
local function acquireLease(key, now, ttl, limit, id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, now + ttl, id)
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    redis.call('PEXPIRE', key, math.max(1, tonumber(last[2]) - now))
    return {1, 0}
  end
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {0, math.max(1, tonumber(first[2]) - now)}
end
`;

/**
 * KEYS[1] the key's lease set; ARGV: now (ms), ttl (ms), limit, lease id.
 * Returns {1, 0} when granted, {0, ms until the earliest lease expires} when full.
 * Every key is in KEYS: Upstash runs allow-key-locking scripts without its global lock.
 */
export const acquireLeaseScript = lua<[number, number]>(
  "lease.acquire",
  `#!lua flags=allow-key-locking
${LUA_ACQUIRE_LEASE}
return acquireLease(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
`,
);
