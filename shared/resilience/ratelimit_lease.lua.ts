/**
 * The token-lease algorithm of leased rate limits (shared/resilience/ratelimit_lease.ts), run
 * with shared/data/redis_script.ts.
 *
 * @module
 */
import { lua } from "../data/redis_script.ts";

/**
 * Leases up to `want` tokens of one identifier from every window of a policy at once: the
 * sliding-window count of @upstash/ratelimit's slidingWindow (`floor(previous × (1 − elapsed))
 * + current`, on the same keys), so a lease of one token decides exactly what its script would.
 *
 * KEYS: per window, its current then its previous bucket (`<prefix>:<identifier>:<index>`).
 * ARGV: now (ms), want, then per window: limit, window (ms), and the tokens this isolate leased
 * in the current and in the previous bucket and never spent (its own over-count: subtracted
 * here for this isolate's decision, left in Redis for the others).
 *
 * Grants `n = min(want, what every window has left)` and adds `n` to every current bucket
 * (SET with the bucket's TTL: one command, where INCRBY + PEXPIRE are two). Returns
 * `{n, cur1, prev1, cur2, prev2, …}`: the buckets' counts after the grant (nothing written when
 * `n` is 0). Commands: MGET + one SET per window when granted; MGET alone when refused.
 * Every key is in KEYS: Upstash runs allow-key-locking scripts without its global lock.
 */
export const leaseTokensScript = lua<number[]>(
  "ratelimit.lease",
  `#!lua flags=allow-key-locking
local now = tonumber(ARGV[1])
local grant = tonumber(ARGV[2])
local counts = redis.call('MGET', unpack(KEYS))
local out = {0}
for i = 1, #KEYS / 2 do
  local a = 2 + (i - 1) * 4
  local limit, window = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local cur = tonumber(counts[2 * i - 1]) or 0
  local prev = tonumber(counts[2 * i]) or 0
  out[2 * i], out[2 * i + 1] = cur, prev
  local ownCur = math.max(0, cur - tonumber(ARGV[a + 3]))
  local ownPrev = math.max(0, prev - tonumber(ARGV[a + 4]))
  local weighted = math.floor((1 - (now % window) / window) * ownPrev)
  grant = math.min(grant, limit - weighted - ownCur)
end
if grant < 1 then return out end
out[1] = grant
for i = 1, #KEYS / 2 do
  local window = tonumber(ARGV[2 + (i - 1) * 4 + 2])
  out[2 * i] = out[2 * i] + grant
  redis.call('SET', KEYS[2 * i - 1], out[2 * i], 'PX', 2 * window + 1000)
end
return out
`,
);
