/**
 * Circuit breakers for the external APIs (`openai-chat`, `openai-transcribe`, `acrcloud`,
 * `shazam`), with their state in Redis so every isolate sees one breaker per API.
 *
 * State machine (thresholds per breaker; these are the defaults):
 * - **closed**: calls pass. Opens after 5 consecutive failures, or when failures are ≥ 50 % of
 *   the calls in the rolling window once it holds ≥ 10 calls. The window is time-based: 60 s in
 *   6 buckets of 10 s (a bucket older than the window no longer counts), so a burst an hour
 *   ago never trips the breaker and a quiet API needs 10 recent calls before the rate rule
 *   applies.
 * - **open** for 60 s: calls fail fast with {@link CircuitOpenError}, and without a Redis round
 *   trip: each isolate caches "open until" from any answer that says open.
 * - **half-open** (entered lazily by the first `acquire()` after open-until): admits `maxProbes`
 *   probes cluster-wide (default 1). A probe permit expires after `probeTimeoutMs`, so an
 *   isolate that died mid-probe cannot wedge the breaker: the slot is handed out again.
 *   `successesToClose` probe successes (default: all `maxProbes`) close it; any probe failure
 *   reopens it for another 60 s.
 *
 * Every transition bumps `generation`; a permit carries the generation it was issued under and
 * `record()` ignores outcomes from an older one (a slow call that started before the breaker
 * opened says nothing about the API now).
 *
 * Two stores behind {@link BreakerStore}: {@link RedisBreakerStore} (one hash per API, each
 * transition atomic in one Lua script) and {@link MemoryBreakerStore} (the same machine in
 * TypeScript, for the embedded default without Redis: then each process has its own breakers).
 *
 * Retries and timeouts are not here: another module composes breaker + timeout + retry.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { Redis } from "@upstash/redis";
import { type Clock, systemClock } from "./clock.ts";
import { metrics } from "./metrics.ts";
import { redis as isolateRedis, redisKey } from "./redis.ts";
import { timed } from "./timing.ts";

/** The external APIs we guard, one breaker each. */
export const externalApis = ["openai-chat", "openai-transcribe", "acrcloud", "shazam"] as const;

/** One of {@link externalApis}. */
export type ExternalApi = typeof externalApis[number];

/** Where a breaker stands. */
export type BreakerState = "closed" | "open" | "half_open";

/** What a guarded call's outcome means for the breaker. */
export type Outcome = "success" | "failure";

/** Thresholds of one breaker (all have defaults, see {@link defaultSettings}). */
export interface BreakerSettings {
  /** Consecutive failures that open a closed breaker. */
  failureThreshold: number;
  /** Failure share (0..1] of the window's calls that opens it... */
  failureRate: number;
  /** ...once the window holds at least this many calls. */
  minimumCalls: number;
  /** Length of the rolling window. */
  windowMs: number;
  /** Buckets the window is split into (it rolls one bucket at a time). */
  windowBuckets: number;
  /** How long an opened breaker rejects before admitting probes. */
  openMs: number;
  /** Probes admitted cluster-wide per half-open period. */
  maxProbes: number;
  /** Probe successes that close the breaker (default: `maxProbes`, i.e. all of them). */
  successesToClose: number;
  /** After this, a probe's permit is handed to someone else (its late outcome is ignored). */
  probeTimeoutMs: number;
}

/** The defaults (the probe timeout leaves room for a slow transcription). */
export const defaultSettings: Readonly<BreakerSettings> = Object.freeze({
  failureThreshold: 5,
  failureRate: 0.5,
  minimumCalls: 10,
  windowMs: 60_000,
  windowBuckets: 6,
  openMs: 60_000,
  maxProbes: 1,
  successesToClose: 1,
  probeTimeoutMs: 30_000,
});

/** Per-breaker options: any threshold, plus what the breaker does when its store fails. */
export interface BreakerOptions extends Partial<BreakerSettings> {
  /** Time source (ms), injectable so tests move it instead of sleeping. */
  clock?: Clock;
  /**
   * When the store (Redis) cannot answer `acquire()`: let the call through (default; the
   * breaker must not take an API down with it) or reject it with the store's error.
   */
  failOpen?: boolean;
}

/** Permission to make one call, from {@link CircuitBreaker.acquire}. */
export interface Permit {
  /** The generation the call runs under. */
  readonly generation: number;
  /** Probe slot (1..maxProbes) in half-open; 0 for an ordinary call. */
  readonly probe: number;
  /** Identifies this probe's hold on its slot (a later holder of the slot has another). */
  readonly token: number;
  /** For a probe: when its permit expires (ms). 0 otherwise. */
  readonly expiresAt: number;
  /** True when the store could not answer and the call was let through unrecorded. */
  readonly degraded: boolean;
}

/** A store's answer to an acquire. */
export interface AcquireResult {
  allowed: boolean;
  state: BreakerState;
  generation: number;
  /** Open: open-until. Half-open: the permit's expiry, or when refused, the earliest expiry. */
  until: number;
  probe: number;
  token: number;
  /** The state this call moved the breaker from (open → half-open), or null. */
  from: BreakerState | null;
}

/** A store's answer to a record. */
export interface RecordResult {
  /** False when the outcome was ignored (older generation, expired probe permit). */
  applied: boolean;
  state: BreakerState;
  generation: number;
  /** Open-until when open, else 0. */
  until: number;
  /** Consecutive failures now. */
  failures: number;
  from: BreakerState | null;
}

/** What `GET /health` shows per breaker. */
export interface BreakerSnapshot {
  name: string;
  state: BreakerState;
  generation: number;
  /** Consecutive failures (closed). */
  failures: number;
  /** Epoch ms while open (it half-opens at the first call after this), else null. */
  open_until: number | null;
  /** Calls and failures in the rolling window (closed). */
  window_calls: number;
  window_failures: number;
  store: "redis" | "memory";
}

/** Where breaker state lives. Each method is one atomic step of the state machine. */
export interface BreakerStore {
  readonly kind: "redis" | "memory";
  acquire(name: string, now: number, s: BreakerSettings): Promise<AcquireResult>;
  record(
    name: string,
    now: number,
    outcome: Outcome,
    permit: Permit,
    s: BreakerSettings,
  ): Promise<RecordResult>;
  read(name: string, now: number, s: BreakerSettings): Promise<BreakerSnapshot>;
}

/** Thrown instead of calling the API while the circuit is open (or half-open and full). */
export class CircuitOpenError extends Error {
  override name = "CircuitOpenError";
  constructor(
    /** The breaker's name, e.g. `acrcloud`. */
    readonly breaker: string,
    /** When trying again may succeed (≥ 0). */
    readonly retryAfterMs: number,
    readonly state: "open" | "half_open",
  ) {
    super(`circuit "${breaker}" is ${state.replace("_", "-")}; retry in ${retryAfterMs} ms`);
  }
}

/** Counts since the isolate started (for metrics). */
export const breakerStats = {
  /** Keyed `name:from->to`, e.g. `acrcloud:closed->open`; counted by the isolate that caused it. */
  transitions: new Map<string, number>(),
  /** Calls refused, keyed by breaker name. */
  rejected: new Map<string, number>(),
  /** Store calls that failed (Redis down or slow), keyed by breaker name. */
  storeErrors: new Map<string, number>(),
};

function bump(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

// ---------------------------------------------------------------------------------------------
// Outcome classification
// ---------------------------------------------------------------------------------------------

/**
 * True when `outcome` (a thrown error, a `Response` or an HTTP status) says the API is in
 * trouble: a timeout (AbortError / TimeoutError), a network error (fetch's TypeError), HTTP
 * 5xx or 429. Other 4xx are our own bad requests and count as success: the API answered. An
 * error carrying a `status` (OpenAI SDK's APIError) is judged by it; any other error counts as
 * a failure, because an unexplained error from an upstream call is more likely the upstream's
 * (a truncated body, a reset connection) than ours.
 */
export function isBreakerFailure(outcome: unknown): boolean {
  if (typeof outcome === "number") return outcome === 429 || outcome >= 500;
  if (outcome instanceof Response) return isBreakerFailure(outcome.status);
  if (typeof outcome === "object" && outcome !== null) {
    const status = (outcome as { status?: unknown }).status;
    if (typeof status === "number" && status >= 400) return isBreakerFailure(status);
  }
  return true;
}

/** Decides a call's outcome from what it returned (`threw` false) or threw (`threw` true). */
export type Classifier = (result: unknown, threw: boolean) => Outcome;

/** Thrown: {@link isBreakerFailure}. Returned: a `Response` by its status, anything else success. */
export const defaultClassifier: Classifier = (result, threw) => {
  if (threw || result instanceof Response) {
    return isBreakerFailure(result) ? "failure" : "success";
  }
  return "success";
};

// ---------------------------------------------------------------------------------------------
// The breaker
// ---------------------------------------------------------------------------------------------

/** Everything a {@link CircuitBreaker} needs. */
export interface CircuitBreakerInit extends BreakerOptions {
  /** e.g. `openai-chat`; also the store key suffix. */
  name: string;
  store: BreakerStore;
}

/** Resolves options to settings, refusing combinations the state machine can't honour. */
export function resolveSettings(options: Partial<BreakerSettings> = {}): BreakerSettings {
  const defined = Object.fromEntries(
    Object.entries(options).filter(([k, v]) => v !== undefined && k in defaultSettings),
  ) as Partial<BreakerSettings>;
  const s = { ...defaultSettings, ...defined };
  if (defined.successesToClose === undefined) s.successesToClose = s.maxProbes;
  const ints: (keyof BreakerSettings)[] = [
    "failureThreshold",
    "minimumCalls",
    "windowMs",
    "windowBuckets",
    "openMs",
    "maxProbes",
    "successesToClose",
    "probeTimeoutMs",
  ];
  for (const k of ints) {
    if (!Number.isInteger(s[k]) || s[k] < 1) {
      throw new RangeError(`breaker ${k} must be an integer ≥ 1`);
    }
  }
  if (!(s.failureRate > 0 && s.failureRate <= 1)) {
    throw new RangeError("breaker failureRate must be in (0, 1]");
  }
  if (s.successesToClose > s.maxProbes) {
    throw new RangeError("breaker successesToClose must not exceed maxProbes");
  }
  return s;
}

/**
 * One breaker. Use {@link breaker} in application code (one shared instance per API, registered
 * for /health); construct directly in tests or to pick the store.
 */
export class CircuitBreaker {
  readonly name: string;
  readonly settings: BreakerSettings;
  readonly store: BreakerStore;
  readonly #clock: Clock;
  readonly #failOpen: boolean;
  /** Open-until as last heard from the store: until then we refuse without asking it. */
  #openUntil = 0;

  constructor(init: CircuitBreakerInit) {
    this.name = init.name;
    this.store = init.store;
    this.settings = resolveSettings(init);
    this.#clock = init.clock ?? systemClock;
    this.#failOpen = init.failOpen ?? true;
  }

  /** Open-until known to this isolate (0 when not known to be open). */
  get cachedOpenUntil(): number {
    return this.#openUntil;
  }

  /**
   * Asks to make one call. Resolves to the permit to pass to {@link record}; rejects with
   * {@link CircuitOpenError} when the circuit is open or half-open with no probe slot free.
   *
   * The store command is issued synchronously (nothing is awaited before it), so the client's
   * auto-pipelining can send it in one HTTP request with commands issued in the same tick.
   */
  async acquire(): Promise<Permit> {
    const now = this.#clock();
    if (now < this.#openUntil) {
      bump(breakerStats.rejected, this.name);
      throw new CircuitOpenError(this.name, this.#openUntil - now, "open");
    }
    let res: AcquireResult;
    try {
      res = await this.store.acquire(this.name, now, this.settings);
    } catch (err) {
      bump(breakerStats.storeErrors, this.name);
      if (!this.#failOpen) throw err;
      console.warn(JSON.stringify({
        msg: "breaker store failed; call let through",
        breaker: this.name,
        error: err instanceof Error ? err.message : String(err),
      }));
      return { generation: -1, probe: 0, token: 0, expiresAt: 0, degraded: true };
    }
    this.#observe(res.state, res.until, res.from, res.generation);
    if (!res.allowed) {
      bump(breakerStats.rejected, this.name);
      throw new CircuitOpenError(
        this.name,
        Math.max(0, res.until - now),
        res.state === "open" ? "open" : "half_open",
      );
    }
    return {
      generation: res.generation,
      probe: res.probe,
      token: res.token,
      expiresAt: res.probe ? res.until : 0,
      degraded: false,
    };
  }

  /**
   * Reports a call's outcome. Never throws: a store failure is counted and logged, since the
   * call's own result matters more than the bookkeeping. Outcomes under an older generation
   * (or an expired probe permit) are ignored by the store.
   */
  async record(outcome: Outcome, permit: Permit): Promise<RecordResult | null> {
    if (permit.degraded) return null;
    try {
      const res = await this.store.record(
        this.name,
        this.#clock(),
        outcome,
        permit,
        this.settings,
      );
      this.#observe(res.state, res.until, res.from, res.generation);
      return res;
    } catch (err) {
      bump(breakerStats.storeErrors, this.name);
      console.warn(JSON.stringify({
        msg: "breaker outcome not recorded",
        breaker: this.name,
        error: err instanceof Error ? err.message : String(err),
      }));
      return null;
    }
  }

  /**
   * acquire → `fn` → record → the result; `fn`'s error is rethrown as is, a refusal throws
   * {@link CircuitOpenError} without calling `fn`. A probe's `fn` gets a signal that aborts
   * when its permit expires (past that, another probe holds the slot); ordinary calls get none.
   */
  async run<T>(
    fn: (signal?: AbortSignal) => Promise<T>,
    classify: Classifier = defaultClassifier,
  ): Promise<T> {
    const permit = await this.acquire();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let signal: AbortSignal | undefined;
    if (permit.probe) {
      const ctl = new AbortController();
      timer = setTimeout(
        () => ctl.abort(new DOMException("probe permit expired", "TimeoutError")),
        this.settings.probeTimeoutMs,
      );
      signal = ctl.signal;
    }
    let value: T;
    try {
      value = await fn(signal);
    } catch (err) {
      clearTimeout(timer);
      await this.record(classify(err, true), permit);
      throw err;
    }
    clearTimeout(timer);
    await this.record(classify(value, false), permit);
    return value;
  }

  /** The breaker's state as stored (one read; for /health). */
  state(): Promise<BreakerSnapshot> {
    return this.store.read(this.name, this.#clock(), this.settings);
  }

  /** Caches open-until, and logs and counts a transition this call caused. */
  #observe(state: BreakerState, until: number, from: BreakerState | null, generation: number) {
    this.#openUntil = state === "open" ? until : 0;
    if (from && from !== state) {
      bump(breakerStats.transitions, `${this.name}:${from}->${state}`);
      console.log(JSON.stringify({
        msg: "breaker transition",
        breaker: this.name,
        from,
        to: state,
        generation,
      }));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Redis store
// ---------------------------------------------------------------------------------------------
//
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
 * successesToClose, ttlMs.
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
      c = c + 1
      if failed then f = f + 1 end
      redis.call('HSET', key, 't' .. i, b, 'c' .. i, c, 'f' .. i, f)
      calls, fails = calls + c, fails + f
    elseif t and t > b - buckets and t < b then
      calls, fails = calls + c, fails + f
    end
  end
  if failed then consec = consec + 1 else consec = 0 end
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

/** A script with its sha computed synchronously, so EVALSHA can go out in the caller's tick. */
interface LuaScript {
  text: string;
  sha: string;
}

function lua(text: string): LuaScript {
  return { text, sha: createHash("sha1").update(text).digest("hex") };
}

const acquireScript = lua(ACQUIRE_LUA);
const recordScript = lua(RECORD_LUA);

/** How long an untouched breaker hash lives (refreshed on every write). */
function keyTtlMs(s: BreakerSettings): number {
  return Math.max(86_400_000, 2 * (s.windowMs + s.openMs + s.probeTimeoutMs));
}

type Row = (string | number)[];

/**
 * Breaker state in Redis: one hash per breaker at `prefix + name`, every step one Lua script
 * (EVALSHA, falling back to EVAL once after a script flush or on a fresh server).
 */
export class RedisBreakerStore implements BreakerStore {
  readonly kind = "redis" as const;

  constructor(
    readonly redis: Redis,
    /** Key prefix, e.g. `rockout:breaker:`. */
    readonly prefix: string = redisKey("breaker") + ":",
  ) {}

  /** The hash holding `name`'s state. */
  key(name: string): string {
    return this.prefix + name;
  }

  acquire(name: string, now: number, s: BreakerSettings): Promise<AcquireResult> {
    const args = [now, s.maxProbes, s.probeTimeoutMs, keyTtlMs(s)];
    return timed("redis", this.#run(acquireScript, this.key(name), args)).then((r) => ({
      allowed: Number(r[0]) === 1,
      state: String(r[1]) as BreakerState,
      generation: Number(r[2]),
      until: Number(r[3]),
      probe: Number(r[4]),
      token: Number(r[5]),
      from: (String(r[6]) || null) as BreakerState | null,
    }));
  }

  record(
    name: string,
    now: number,
    outcome: Outcome,
    permit: Permit,
    s: BreakerSettings,
  ): Promise<RecordResult> {
    const args = [
      now,
      outcome === "failure" ? 1 : 0,
      permit.generation,
      permit.probe,
      permit.token,
      s.failureThreshold,
      s.failureRate,
      s.minimumCalls,
      s.windowMs,
      s.windowBuckets,
      s.openMs,
      s.successesToClose,
      keyTtlMs(s),
    ];
    return timed("redis", this.#run(recordScript, this.key(name), args)).then((r) => ({
      applied: Number(r[0]) === 1,
      state: String(r[1]) as BreakerState,
      generation: Number(r[2]),
      until: Number(r[3]),
      failures: Number(r[4]),
      from: (String(r[5]) || null) as BreakerState | null,
    }));
  }

  async read(name: string, now: number, s: BreakerSettings): Promise<BreakerSnapshot> {
    const fields = await timed("redis", this.redis.hgetall<Fields>(this.key(name)));
    return snapshot(name, "redis", fields ?? {}, now, s);
  }

  /** EVALSHA issued before anything is awaited; EVAL only when Redis doesn't know the script. */
  #run(script: LuaScript, key: string, args: (string | number)[]): Promise<Row> {
    const argv = args.map(String);
    return this.redis.evalsha<string[], Row>(script.sha, [key], argv).catch((err) => {
      if (!(err instanceof Error) || !/NOSCRIPT/i.test(err.message)) throw err;
      return this.redis.eval<string[], Row>(script.text, [key], argv);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// In-process store
// ---------------------------------------------------------------------------------------------

/** A breaker's fields, named as in the Redis hash. */
type Fields = Record<string, string | number | undefined>;

const num = (v: unknown): number => {
  const n = Number(v);
  return Number.isFinite(n) ? n : 0;
};

function windowTotals(f: Fields, now: number, s: BreakerSettings) {
  const b = Math.floor(now / (s.windowMs / s.windowBuckets));
  let calls = 0;
  let failures = 0;
  for (let i = 0; i < s.windowBuckets; i++) {
    const t = f[`t${i}`];
    if (t === undefined) continue;
    if (num(t) > b - s.windowBuckets && num(t) <= b) {
      calls += num(f[`c${i}`]);
      failures += num(f[`f${i}`]);
    }
  }
  return { calls, failures };
}

function snapshot(
  name: string,
  store: "redis" | "memory",
  f: Fields,
  now: number,
  s: BreakerSettings,
): BreakerSnapshot {
  const state = (f.state as BreakerState | undefined) ?? "closed";
  const w = state === "closed" ? windowTotals(f, now, s) : { calls: 0, failures: 0 };
  return {
    name,
    state,
    generation: num(f.gen),
    failures: num(f.consec),
    open_until: state === "open" ? num(f.until) : null,
    window_calls: w.calls,
    window_failures: w.failures,
    store,
  };
}

/**
 * Breaker state in this process: the scripts above, step for step, over a plain object per
 * breaker. For the embedded default (no Redis), where each process has its own breakers.
 */
export class MemoryBreakerStore implements BreakerStore {
  readonly kind = "memory" as const;
  readonly #breakers = new Map<string, Fields>();

  #fields(name: string): Fields {
    let f = this.#breakers.get(name);
    if (!f) this.#breakers.set(name, f = {});
    return f;
  }

  acquire(name: string, now: number, s: BreakerSettings): Promise<AcquireResult> {
    const f = this.#fields(name);
    let state = (f.state as BreakerState | undefined) ?? "closed";
    let gen = num(f.gen);
    const refuse = { allowed: false, probe: 0, token: 0 };
    if (state === "closed") {
      return Promise.resolve({
        allowed: true,
        state,
        generation: gen,
        until: 0,
        probe: 0,
        token: 0,
        from: null,
      });
    }
    let from: BreakerState | null = null;
    if (state === "open") {
      if (now < num(f.until)) {
        return Promise.resolve({ ...refuse, state, generation: gen, until: num(f.until), from });
      }
      from = "open";
      state = "half_open";
      gen++;
      Object.assign(f, { state, gen, until: 0, hseq: num(f.seq), ok: 0 });
    }
    const hseq = num(f.hseq);
    let earliest = 0;
    for (let i = 1; i <= s.maxProbes; i++) {
      const holder = num(f[`p${i}`]);
      const expires = num(f[`e${i}`]);
      if (holder <= hseq || (expires >= 0 && expires <= now)) {
        const token = num(f.seq) + 1;
        const expiry = now + s.probeTimeoutMs;
        Object.assign(f, { seq: token, [`p${i}`]: token, [`e${i}`]: expiry });
        return Promise.resolve({
          allowed: true,
          state,
          generation: gen,
          until: expiry,
          probe: i,
          token,
          from,
        });
      }
      if (expires > 0 && (earliest === 0 || expires < earliest)) earliest = expires;
    }
    return Promise.resolve({ ...refuse, state, generation: gen, until: earliest, from });
  }

  record(
    name: string,
    now: number,
    outcome: Outcome,
    permit: Permit,
    s: BreakerSettings,
  ): Promise<RecordResult> {
    const f = this.#fields(name);
    const state = (f.state as BreakerState | undefined) ?? "closed";
    const gen = num(f.gen);
    let consec = num(f.consec);
    const failed = outcome === "failure";
    const ignored = (until: number): Promise<RecordResult> =>
      Promise.resolve({
        applied: false,
        state,
        generation: gen,
        until,
        failures: consec,
        from: null,
      });
    if (permit.generation !== gen) return ignored(num(f.until));

    const move = (to: BreakerState, until: number): Promise<RecordResult> => {
      for (let i = 0; i < s.windowBuckets; i++) {
        delete f[`t${i}`];
        delete f[`c${i}`];
        delete f[`f${i}`];
      }
      Object.assign(f, { state: to, gen: gen + 1, until, consec: 0, ok: 0 });
      return Promise.resolve({
        applied: true,
        state: to,
        generation: gen + 1,
        until,
        failures: 0,
        from: state,
      });
    };

    if (state === "closed") {
      const b = Math.floor(now / (s.windowMs / s.windowBuckets));
      const mine = b % s.windowBuckets;
      if (f[`t${mine}`] === undefined || num(f[`t${mine}`]) !== b) {
        Object.assign(f, { [`t${mine}`]: b, [`c${mine}`]: 0, [`f${mine}`]: 0 });
      }
      f[`c${mine}`] = num(f[`c${mine}`]) + 1;
      if (failed) f[`f${mine}`] = num(f[`f${mine}`]) + 1;
      const { calls, failures } = windowTotals(f, now, s);
      consec = failed ? consec + 1 : 0;
      if (
        consec >= s.failureThreshold ||
        (calls >= s.minimumCalls && failures >= s.failureRate * calls)
      ) {
        return move("open", now + s.openMs);
      }
      f.consec = consec;
      return Promise.resolve({
        applied: true,
        state,
        generation: gen,
        until: 0,
        failures: consec,
        from: null,
      });
    }

    if (state === "half_open") {
      const holder = num(f[`p${permit.probe}`]);
      if (permit.probe < 1 || permit.token <= num(f.hseq) || holder !== permit.token) {
        return ignored(0);
      }
      if (failed) return move("open", now + s.openMs);
      f[`e${permit.probe}`] = -1;
      f.ok = num(f.ok) + 1;
      if (num(f.ok) >= s.successesToClose) return move("closed", 0);
      return Promise.resolve({
        applied: true,
        state,
        generation: gen,
        until: 0,
        failures: 0,
        from: null,
      });
    }

    return ignored(num(f.until));
  }

  read(name: string, now: number, s: BreakerSettings): Promise<BreakerSnapshot> {
    return Promise.resolve(snapshot(name, "memory", this.#breakers.get(name) ?? {}, now, s));
  }
}

// ---------------------------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------------------------

const registry = new Map<string, CircuitBreaker>();
/** One store per isolate: Redis when configured, else this process's memory. */
let defaultStore: BreakerStore | undefined;

/**
 * The isolate's breaker for `name` (created on first use with `options`, later calls return the
 * same instance), stored in the module-scope Redis when configured, else in memory. Registered
 * so /health can list it.
 */
export function breaker(name: string, options: BreakerOptions = {}): CircuitBreaker {
  let b = registry.get(name);
  if (!b) {
    defaultStore ??= isolateRedis ? new RedisBreakerStore(isolateRedis) : new MemoryBreakerStore();
    b = new CircuitBreaker({ ...options, name, store: defaultStore });
    registry.set(name, b);
  }
  return b;
}

/** Every breaker made with {@link breaker}, in creation order. */
export function listBreakers(): CircuitBreaker[] {
  return [...registry.values()];
}

/**
 * Snapshots for /health of the known external APIs plus any other registered breaker. A breaker
 * whose store can't be read is reported with `error` instead of failing the whole answer.
 */
export function breakerHealth(): Promise<(BreakerSnapshot | { name: string; error: string })[]> {
  for (const api of externalApis) breaker(api);
  return Promise.all(
    listBreakers().map((b) =>
      b.state().catch((err) => ({
        name: b.name,
        error: err instanceof Error ? err.message : String(err),
      }))
    ),
  );
}

metrics.collect(() => [
  ...[...breakerStats.transitions].map(([key, value]) => {
    const [name, change] = key.split(":");
    const [from, to] = change.split("->");
    return {
      name: "breaker_transitions_total",
      labels: { breaker: name, from, to },
      value,
      type: "counter" as const,
    };
  }),
  ...[...breakerStats.rejected].map(([name, value]) => ({
    name: "breaker_rejections_total",
    labels: { breaker: name },
    value,
    type: "counter" as const,
  })),
  ...[...breakerStats.storeErrors].map(([name, value]) => ({
    name: "breaker_store_errors_total",
    labels: { breaker: name },
    value,
    type: "counter" as const,
  })),
  ...listBreakers().map((b) => ({
    name: "breaker_open",
    labels: { breaker: b.name },
    value: b.cachedOpenUntil > Date.now() ? 1 : 0,
    help: "1 while this isolate knows the circuit is open",
  })),
]);
