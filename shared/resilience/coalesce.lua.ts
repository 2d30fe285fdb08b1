/**
 * The coalescer's cross-isolate protocol (shared/resilience/coalesce.ts): claim and finish, each
 * one atomic script run with shared/data/redis_script.ts. Both steps are Lua functions too, so
 * a script that decides more in the same round trip (shared/resilience/coalesce_slot.lua.ts)
 * runs this very protocol.
 *
 * @module
 */
import { lua } from "../data/redis_script.ts";

/** Claim's reply: the leader's published envelope, the lock holder to follow, or the lead. */
export type Claim = ["done", unknown] | ["follow", string] | ["lead"];

/**
 * Lua: `coalesceWatch(lock, result)` → {'done', envelope} when the leader being waited for
 * (`result`: its result key, or nil) published, {'follow', holder token} while a lock is held,
 * nil when the lock is free.
 */
export const LUA_COALESCE_WATCH = `
local function coalesceWatch(lock, result)
  if result then
    local done = redis.call('GET', result)
    if done then return {'done', done} end
  end
  local holder = redis.call('GET', lock)
  if holder then return {'follow', holder} end
  return nil
end
`;

/**
 * Lua: `coalesceFinish(lock, token, result, envelope, ttl)`: publishes `envelope` at `result`
 * for `ttl` ms (when `result` is given), then releases the lock only if `token` still holds it
 * (compare-and-delete: after an expiry it may be somebody else's).
 */
export const LUA_COALESCE_FINISH = `
local function coalesceFinish(lock, token, result, envelope, ttl)
  if result then redis.call('SET', result, envelope, 'PX', ttl) end
  if redis.call('GET', lock) == token then redis.call('DEL', lock) end
end
`;

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
${LUA_COALESCE_WATCH}
local seen = coalesceWatch(KEYS[1], KEYS[2])
if seen then return seen end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'lead'}
`,
);

/**
 * KEYS[1] the lock, KEYS[2] (optional) the leader's result key; ARGV[1] token, ARGV[2]
 * envelope and ARGV[3] its ttl (ms) when publishing. Publishes, then releases the lock only if
 * we still hold it.
 */
export const finishScript = lua<number>(
  "coalesce.finish",
  `#!lua flags=allow-key-locking
${LUA_COALESCE_FINISH}
coalesceFinish(KEYS[1], ARGV[1], KEYS[2], ARGV[2], ARGV[3])
return 1
`,
);
