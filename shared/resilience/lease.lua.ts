/**
 * The lease algorithm (shared/resilience/lease.ts), run with shared/data/redis_script.ts.
 *
 * @module
 */
import { lua } from "../data/redis_script.ts";

/**
 * KEYS[1] the key's lease set; ARGV: now (ms), ttl (ms), limit, lease id.
 * Returns {1, 0} when granted, {0, ms until the earliest lease expires} when full.
 * The set's own TTL follows its longest lease, so an abandoned key vanishes with it.
 * Every key is in KEYS: Upstash runs allow-key-locking scripts without its global lock.
 */
export const acquireLeaseScript = lua<[number, number]>(
  "lease.acquire",
  `#!lua flags=allow-key-locking
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[4])
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - now))
  return {1, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, math.max(1, tonumber(first[2]) - now)}
`,
);
