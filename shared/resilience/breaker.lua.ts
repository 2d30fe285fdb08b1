/**
 * The breaker's algorithm: each step of the state machine (shared/resilience/breaker.ts) is one
 * atomic Lua script over one hash per breaker, run with shared/data/redis_script.ts.
 *
 * @module
 */
import { lua } from "../data/redis_script.ts";

// One hash per breaker. Fields:
//   state        closed | open | half_open (absent = closed)
//   gen          generation, bumped on every transition
//   until        open-until (ms) while open
//   consec       consecutive failures (closed)
//   t<i> c<i> f<i>  window bucket i (0..buckets-1): bucket number (floor(now / bucketMs)),
//                calls, failures; a bucket whose number is outside the window counts as empty
//   seq          probe token counter (never reset)
//   hseq         seq when the current half-open period began: slots held by tokens ≤ hseq
//                belong to an earlier period and are free
//   p<i> e<i>    probe slot i (1..maxProbes): holder token, expiry (ms; -1 once it succeeded)
//   ok           probe successes in this half-open period
// The hash gets a TTL refreshed on each write so breakers of renamed APIs don't linger.
//
// `allow-key-locking`: on Upstash the script then locks only its KEYS instead of running under
// the global lock; it requires every key touched to be in KEYS (here: only the hash).

/** Shared by both scripts: HMGET of the window buckets and clearing them on a transition. */
const LUA_WINDOW = `
local function windowFields(buckets)
  local fields = {}
  for i = 0, buckets - 1 do
    fields[#fields + 1] = 't' .. i
    fields[#fields + 1] = 'c' .. i
    fields[#fields + 1] = 'f' .. i
  end
  return fields
end
`;

/**
 * Acquire. KEYS[1] = breaker hash. ARGV = now, maxProbes, probeTimeoutMs, ttlMs.
 * Returns {allowed 0|1, state, gen, until, probe, token, from ('' = no transition)}.
 * Closed costs one HMGET; open→half-open happens here, lazily, on the first call after until.
 */
const ACQUIRE_LUA = `#!lua flags=allow-key-locking
local key = KEYS[1]
local now = tonumber(ARGV[1])
local maxProbes = tonumber(ARGV[2])
local probeTimeout = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local h = redis.call('HMGET', key, 'state', 'gen', 'until', 'seq', 'hseq')
local state = h[1] or 'closed'
local gen = tonumber(h[2]) or 0
if state == 'closed' then return {1, state, gen, 0, 0, 0, ''} end
local from = ''
local hseq = tonumber(h[5]) or 0
if state == 'open' then
  local openUntil = tonumber(h[3]) or 0
  if now < openUntil then return {0, state, gen, openUntil, 0, 0, ''} end
  from = 'open'
  state = 'half_open'
  gen = gen + 1
  hseq = tonumber(h[4]) or 0
  redis.call('HSET', key, 'state', state, 'gen', gen, 'until', 0, 'hseq', hseq, 'ok', 0)
  redis.call('PEXPIRE', key, ttl)
end
local earliest = 0
for i = 1, maxProbes do
  local slot = redis.call('HMGET', key, 'p' .. i, 'e' .. i)
  local holder = tonumber(slot[1]) or 0
  local expires = tonumber(slot[2]) or 0
  if holder <= hseq or (expires >= 0 and expires <= now) then
    local token = redis.call('HINCRBY', key, 'seq', 1)
    local expiry = now + probeTimeout
    redis.call('HSET', key, 'p' .. i, token, 'e' .. i, expiry)
    redis.call('PEXPIRE', key, ttl)
    return {1, state, gen, expiry, i, token, from}
  end
  if expires > 0 and (earliest == 0 or expires < earliest) then earliest = expires end
end
return {0, state, gen, earliest, 0, 0, from}
`;

/**
 * Record. KEYS[1] = breaker hash. ARGV = now, failed (1|0), generation, probe, token,
 * failureThreshold, failureRate, minimumCalls, windowMs, windowBuckets, openMs,
 * successesToClose, ttlMs, and (optional, default 1) how many calls of this outcome: ordinary
 * successes held and recorded together (breaker.ts, DeferredOutcomes) count as that many
 * calls in one step.
 * Returns {applied 0|1, state, gen, until, consecutive failures, from ('' = no transition)}.
 */
const RECORD_LUA = `#!lua flags=allow-key-locking
${LUA_WINDOW}
local key = KEYS[1]
local now = tonumber(ARGV[1])
local failed = ARGV[2] == '1'
local permitGen = tonumber(ARGV[3])
local probe = tonumber(ARGV[4])
local token = tonumber(ARGV[5])
local threshold = tonumber(ARGV[6])
local rate = tonumber(ARGV[7])
local minCalls = tonumber(ARGV[8])
local windowMs = tonumber(ARGV[9])
local buckets = tonumber(ARGV[10])
local openMs = tonumber(ARGV[11])
local toClose = tonumber(ARGV[12])
local ttl = tonumber(ARGV[13])
local count = tonumber(ARGV[14]) or 1
local h = redis.call('HMGET', key, 'state', 'gen', 'until', 'consec', 'hseq')
local state = h[1] or 'closed'
local gen = tonumber(h[2]) or 0
local consec = tonumber(h[4]) or 0
if permitGen ~= gen then return {0, state, gen, tonumber(h[3]) or 0, consec, ''} end

-- Any transition: new generation; the window and counters start empty in the new state.
local function move(to, untilMs)
  redis.call('HDEL', key, unpack(windowFields(buckets)))
  redis.call('HSET', key, 'state', to, 'gen', gen + 1, 'until', untilMs, 'consec', 0, 'ok', 0)
  redis.call('PEXPIRE', key, ttl)
  return {1, to, gen + 1, untilMs, 0, state}
end

if state == 'closed' then
  local bucketMs = windowMs / buckets
  local b = math.floor(now / bucketMs)
  local mine = b % buckets
  local w = redis.call('HMGET', key, unpack(windowFields(buckets)))
  local calls, fails = 0, 0
  for i = 0, buckets - 1 do
    local t = tonumber(w[3 * i + 1])
    local c = tonumber(w[3 * i + 2]) or 0
    local f = tonumber(w[3 * i + 3]) or 0
    if i == mine then
      if t ~= b then c, f = 0, 0 end
      c = c + count
      if failed then f = f + count end
      redis.call('HSET', key, 't' .. i, b, 'c' .. i, c, 'f' .. i, f)
      calls, fails = calls + c, fails + f
    elseif t and t > b - buckets and t < b then
      calls, fails = calls + c, fails + f
    end
  end
  if failed then consec = consec + count else consec = 0 end
  if consec >= threshold or (calls >= minCalls and fails >= rate * calls) then
    return move('open', now + openMs)
  end
  redis.call('HSET', key, 'consec', consec)
  redis.call('PEXPIRE', key, ttl)
  return {1, state, gen, 0, consec, ''}
end

if state == 'half_open' then
  local hseq = tonumber(h[5]) or 0
  local holder = tonumber(redis.call('HGET', key, 'p' .. probe)) or 0
  -- Not a probe of this period, or its permit expired and the slot went to another probe.
  if probe < 1 or token <= hseq or holder ~= token then return {0, state, gen, 0, consec, ''} end
  if failed then return move('open', now + openMs) end
  redis.call('HSET', key, 'e' .. probe, -1)
  local ok = redis.call('HINCRBY', key, 'ok', 1)
  if ok >= toClose then return move('closed', 0) end
  return {1, state, gen, 0, 0, ''}
end

-- open: no permit of this generation exists (acquire refuses while open).
return {0, state, gen, tonumber(h[3]) or 0, consec, ''}
`;

/**
 * Peek. KEYS[1] = breaker hash. Returns {state, gen, until}, changing nothing: what a closed
 * acquire reads, without taking a probe slot when the breaker is (or is due to be) half-open.
 * A script rather than an HMGET so that it shares the write pipeline (one HTTP request) with
 * the scripts issued beside it.
 */
const PEEK_LUA = `#!lua flags=allow-key-locking
local h = redis.call('HMGET', KEYS[1], 'state', 'gen', 'until')
return {h[1] or 'closed', tonumber(h[2]) or 0, tonumber(h[3]) or 0}
`;

/** Acquire's reply: allowed, state, gen, until, probe, token, from. */
export const acquireScript = lua<(string | number)[]>("breaker.acquire", ACQUIRE_LUA);
/** Record's reply: applied, state, gen, until, consecutive failures, from. */
export const recordScript = lua<(string | number)[]>("breaker.record", RECORD_LUA);
/** Peek's reply: state, gen, until. */
export const peekScript = lua<(string | number)[]>("breaker.peek", PEEK_LUA);
