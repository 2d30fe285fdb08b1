/**
 * The coalescer's cross-isolate protocol (shared/resilience/coalesce.ts): claim and finish, each
 * one atomic script run with shared/data/redis_script.ts.
 *
 * @module
 */
import { lua } from "../data/redis_script.ts";

/** Claim's reply: the leader's published envelope, the lock holder to follow, or the lead. */
export type Claim = ["done", unknown] | ["follow", string] | ["lead"];

/**
 * KEYS[1] the lock; KEYS[2] (optional) the result key of the leader being waited for.
 * ARGV[1] our token, ARGV[2] lock ttl (ms).
 * Returns {'done', envelope} when that leader published, {'follow', holder token} while a
 * lock is held, or {'lead'} after taking the free lock (SET NX PX, atomically with the check,
 * so a leader that died without publishing is replaced by exactly one waiter).
 */
export const claimScript = lua<Claim>(
  "coalesce.claim",
  `#!lua flags=allow-key-locking
if KEYS[2] then
  local done = redis.call('GET', KEYS[2])
  if done then return {'done', done} end
end
local holder = redis.call('GET', KEYS[1])
if holder then return {'follow', holder} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'lead'}
`,
);

/**
 * KEYS[1] the lock, KEYS[2] (optional) the leader's result key; ARGV[1] token, ARGV[2]
 * envelope and ARGV[3] its ttl (ms) when publishing. Publishes, then releases the lock only if
 * we still hold it (compare-and-delete: after an expiry it may be somebody else's).
 */
export const finishScript = lua<number>(
  "coalesce.finish",
  `#!lua flags=allow-key-locking
if KEYS[2] then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`,
);
