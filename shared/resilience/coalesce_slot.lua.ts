/**
 * Shared results' two round trips (shared/resilience/coalesce_slot.ts), each one atomic script
 * run with shared/data/redis_script.ts. They run the coalescer's protocol
 * (shared/resilience/coalesce.lua.ts) and the lease algorithm (shared/resilience/lease.lua.ts)
 * themselves, as Lua functions, so what took a stored-value read, a claim and a slot (three
 * round trips, one after the other) is decided in one, and publishing, storing and releasing
 * lock and slot in another.
 *
 * @module
 */
import { lua } from "../data/redis_script.ts";
import { LUA_COALESCE_FINISH, LUA_COALESCE_WATCH } from "./coalesce.lua.ts";
import { LUA_ACQUIRE_LEASE } from "./lease.lua.ts";

/**
 * Begin's reply: the stored value (its JSON), the watched leader's envelope, the lock holder to
 * follow, the lead (lock and slot taken), or the caller's slots all taken (ms until one frees).
 */
export type Begin =
  | ["stored", unknown]
  | ["done", unknown]
  | ["follow", string]
  | ["lead"]
  | ["full", number];

/**
 * KEYS: the lock, the caller's slot set, then the stored value's key and the watched leader's
 * result key where ARGV[7] and ARGV[8] give their positions (0: not sent).
 * ARGV: token, lock ttl (ms), now (ms), slot ttl (ms), slot limit, slot id, stored position,
 * watched position.
 * In order: a stored value wins; then the watched leader's result, or a lock holder to follow;
 * else the caller's slot is taken and then the lock, or neither when its slots are all taken
 * (nobody is left waiting for a leader that may not compute).
 */
export const beginScript = lua<Begin>(
  "coalesce_slot.begin",
  `#!lua flags=allow-key-locking
${LUA_COALESCE_WATCH}
${LUA_ACQUIRE_LEASE}
local stored = tonumber(ARGV[7])
if stored > 0 then
  local value = redis.call('GET', KEYS[stored])
  if value then return {'stored', value} end
end
local watched = tonumber(ARGV[8])
local seen = coalesceWatch(KEYS[1], watched > 0 and KEYS[watched] or nil)
if seen then return seen end
local slot = acquireLease(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6])
if slot[1] ~= 1 then return {'full', slot[2]} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'lead'}
`,
);

/**
 * KEYS: the lock, the slot set, then the result key and the stored value's key where ARGV[3]
 * and ARGV[6] give their positions (0: not sent).
 * ARGV: token, slot id, result position, envelope, envelope ttl (ms), stored position, value
 * (JSON), value ttl (ms).
 * Stores the value, publishes the envelope, releases the lock (if still ours) and the slot.
 */
export const finishScript = lua<number>(
  "coalesce_slot.finish",
  `#!lua flags=allow-key-locking
${LUA_COALESCE_FINISH}
local stored = tonumber(ARGV[6])
if stored > 0 then redis.call('SET', KEYS[stored], ARGV[7], 'PX', ARGV[8]) end
local result = tonumber(ARGV[3])
coalesceFinish(KEYS[1], ARGV[1], result > 0 and KEYS[result] or nil, ARGV[4], ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
`,
);
