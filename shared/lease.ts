/**
 * Concurrency leases: at most `limit` requests in flight per key across every isolate
 * (e.g. recall: 5 per user). `@upstash/ratelimit` only limits rates, so this is ours.
 *
 * A lease is a member of a sorted set scored by its expiry. Acquire (one Lua script: drop
 * expired, count, add) and release (one ZREM) are one round trip each, and a lease expires by
 * itself after `ttlMs`, so an isolate killed mid-request never leaks a slot for longer.
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import type { Context, MiddlewareHandler } from "hono";
import { type Clock, systemClock } from "./clock.ts";
import { ProblemError } from "./problem.ts";
import { metrics } from "./metrics.ts";
import { redis, redisKey } from "./redis.ts";
import { timed } from "./timing.ts";
import { untilAborted } from "./abort.ts";

/** How many leases a key allows and how long one lives. */
export interface LeaseOptions {
  /** Leases held at once per key (≥ 1). */
  limit: number;
  /** Lifetime of a lease: the route's budget plus a margin, so it outlives a normal request. */
  ttlMs: number;
}

/** A held slot. */
export interface Lease {
  readonly key: string;
  readonly id: string;
  /** Epoch ms (store clock) at which the slot frees itself. */
  readonly expiresAt: number;
  /**
   * Frees the slot. Idempotent (later calls share the first one's promise) and never rejects:
   * a lease that cannot be released expires by itself.
   */
  release(): Promise<void>;
}

/** What an acquire decided. */
export type LeaseResult =
  | { ok: true; lease: Lease }
  /** `retryAfterMs`: until the earliest held lease expires (an upper bound on the wait). */
  | { ok: false; retryAfterMs: number };

/** Where leases live: Redis across isolates, or this process's memory. */
export interface LeaseStore {
  acquire(key: string, options: LeaseOptions): Promise<LeaseResult>;
}

/** Counts since the isolate started (exported in metrics). */
export const leaseStats = {
  granted: 0,
  rejected: 0,
  failOpen: 0,
  failClosed: 0,
  /** Grants that arrived after the decision timeout and were handed straight back. */
  lateReleased: 0,
};

function checkOptions({ limit, ttlMs }: LeaseOptions): void {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`lease limit ${limit} < 1`);
  if (!(ttlMs >= 1)) throw new RangeError(`lease ttlMs ${ttlMs} < 1`);
}

function makeLease(
  key: string,
  id: string,
  expiresAt: number,
  drop: () => Promise<unknown>,
): Lease {
  let released: Promise<void> | undefined;
  return {
    key,
    id,
    expiresAt,
    release() {
      released ??= drop().then(
        () => {},
        (err) => {
          console.warn(JSON.stringify({ msg: "lease release failed", key, error: String(err) }));
        },
      );
      return released;
    },
  };
}

/**
 * KEYS[1] the key's lease set; ARGV: now (ms), ttl (ms), limit, lease id.
 * Returns {1, 0} when granted, {0, ms until the earliest lease expires} when full.
 * The set's own TTL follows its longest lease, so an abandoned key vanishes with it.
 * Every key is in KEYS: Upstash runs allow-key-locking scripts without its global lock.
 */
const ACQUIRE_LUA = `#!lua flags=allow-key-locking
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
`;

/** Leases in Redis, shared by every isolate. Expiry is scored with `clock` (tests move it). */
export class RedisLeaseStore implements LeaseStore {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #clock: Clock;
  readonly #acquire;
  readonly #pending = new Set<Promise<unknown>>();

  /** `prefix` is prepended to every key (end it with `:`). */
  constructor(redis: Redis, prefix: string, clock: Clock = systemClock) {
    this.#redis = redis;
    this.#prefix = prefix;
    this.#clock = clock;
    this.#acquire = redis.createScript<[number, number]>(ACQUIRE_LUA);
  }

  /** One round trip (EVALSHA; the first call after a Redis restart adds the EVAL fallback). */
  async acquire(key: string, options: LeaseOptions): Promise<LeaseResult> {
    checkOptions(options);
    const now = Math.floor(this.#clock());
    const id = crypto.randomUUID();
    const fullKey = this.#prefix + key;
    const [granted, retryAfterMs] = await this.#track(
      timed(
        "redis",
        this.#acquire.exec([fullKey], [
          String(now),
          String(options.ttlMs),
          String(options.limit),
          id,
        ]),
      ),
    );
    if (granted !== 1) return { ok: false, retryAfterMs: Number(retryAfterMs) };
    return {
      ok: true,
      lease: makeLease(
        key,
        id,
        now + options.ttlMs,
        () => this.#track(timed("redis", this.#redis.zrem(fullKey, id))),
      ),
    };
  }

  /** Resolves once every Redis call this store started has settled (shutdown, tests). */
  async idle(): Promise<void> {
    while (this.#pending.size) await Promise.allSettled([...this.#pending]);
  }

  #track<T>(work: Promise<T>): Promise<T> {
    this.#pending.add(work);
    work.finally(() => this.#pending.delete(work)).catch(() => {});
    return work;
  }
}

/** Leases in this process only: limits are per isolate (no Redis configured, tests). */
export class MemoryLeaseStore implements LeaseStore {
  readonly #clock: Clock;
  /** key → lease id → expiresAt */
  readonly #keys = new Map<string, Map<string, number>>();

  constructor(clock: Clock = systemClock) {
    this.#clock = clock;
  }

  acquire(key: string, options: LeaseOptions): Promise<LeaseResult> {
    checkOptions(options);
    const now = Math.floor(this.#clock());
    let leases = this.#keys.get(key);
    if (!leases) this.#keys.set(key, leases = new Map());
    let earliest = Infinity;
    for (const [id, expiresAt] of leases) {
      if (expiresAt <= now) leases.delete(id);
      else earliest = Math.min(earliest, expiresAt);
    }
    if (leases.size >= options.limit) {
      return Promise.resolve({ ok: false, retryAfterMs: Math.max(1, earliest - now) });
    }
    const id = crypto.randomUUID();
    const expiresAt = now + options.ttlMs;
    leases.set(id, expiresAt);
    const held = leases;
    return Promise.resolve({
      ok: true,
      lease: makeLease(key, id, expiresAt, () => {
        held.delete(id);
        if (held.size === 0 && this.#keys.get(key) === held) this.#keys.delete(key);
        return Promise.resolve();
      }),
    });
  }
}

/** The isolate's store: Redis when configured, else memory (limits per isolate). */
export const leaseStore: LeaseStore = redis
  ? new RedisLeaseStore(redis, redisKey("lease") + ":")
  : new MemoryLeaseStore();

/**
 * Acquires, but gives up after `decisionMs` (or at once on a Redis error) and returns null so
 * the caller can fail open or closed. A grant that arrives too late is released at once, so
 * a slow Redis does not leave slots taken by requests that never ran.
 */
export async function acquireWithin(
  store: LeaseStore,
  key: string,
  options: LeaseOptions,
  decisionMs: number,
): Promise<LeaseResult | null> {
  let timedOut = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => {
      timedOut = true;
      resolve(null);
    }, decisionMs);
  });
  const attempt = store.acquire(key, options).then((result) => {
    if (timedOut && result.ok) {
      leaseStats.lateReleased++;
      return result.lease.release().then(() => null);
    }
    return result;
  }, () => null);
  try {
    return await Promise.race([attempt, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs `fn` while holding `lease`, and releases it on every path: success, throw, `signal`
 * abort, and `ttlMs` running out (the lease has expired by then anyway). On abort or timeout
 * we stop waiting for `fn` and free the slot at once: `fn` got a signal telling it to stop,
 * and a handler that ignores it must not keep the slot for others.
 */
async function holding<T>(
  lease: Lease,
  ttlMs: number,
  signal: AbortSignal | undefined,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  if (signal?.aborted) onAbort();
  const timer = setTimeout(() => {
    controller.abort(new DOMException(`lease held longer than ${ttlMs} ms`, "TimeoutError"));
  }, ttlMs);
  try {
    controller.signal.throwIfAborted();
    return await untilAborted(fn(controller.signal), controller.signal);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    await lease.release();
  }
}

/**
 * Acquires a lease on `key`, runs `fn` with a signal (aborted by `options.signal` or after
 * `ttlMs`), and releases the lease in `finally`. Returns `{ok: false}` without running `fn`
 * when every slot is taken; store errors reject.
 */
export async function withLease<T>(
  store: LeaseStore,
  key: string,
  options: LeaseOptions & { signal?: AbortSignal },
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<{ ok: true; value: T } | { ok: false; retryAfterMs: number }> {
  options.signal?.throwIfAborted();
  const result = await store.acquire(key, options);
  if (!result.ok) return result;
  return { ok: true, value: await holding(result.lease, options.ttlMs, options.signal, fn) };
}

/** One named concurrency limit for {@link concurrencyLimit}. */
export interface ConcurrencyPolicy {
  /** Shown in problems (`policy`) and part of the Redis key, e.g. `recall`. */
  name: string;
  /** Requests in flight at once per key. */
  limit: number;
  /** Lease lifetime: the route's budget plus a margin. */
  ttlMs: number;
  /** Whose slots a request takes, e.g. the user id. */
  key: (c: Context) => string;
  /** When the store can't answer in time: let the request through, or answer 503. */
  failOpen: boolean;
  /** How long to wait for the store before applying `failOpen` (default 50 ms). */
  decisionMs?: number;
  /** Default: the isolate's {@link leaseStore}. */
  store?: LeaseStore;
}

/** Seconds a client should wait before retrying when the store is unreachable. */
const unavailableRetryS = 5;

/**
 * Middleware allowing `limit` requests in flight per `key(c)`: 429 problem+json with
 * Retry-After when full; fail open or 503 when the store can't decide within `decisionMs`.
 * The lease is released when the handler finishes, throws, or the request is abandoned
 * (client gone or budget expired: `c.req.raw.signal`, `c.var.budget.aborted`).
 */
export function concurrencyLimit(policy: ConcurrencyPolicy): MiddlewareHandler {
  checkOptions(policy);
  return async (c, next) => {
    const store = policy.store ?? leaseStore;
    const result = await acquireWithin(
      store,
      `${policy.name}:${policy.key(c)}`,
      policy,
      policy.decisionMs ?? 50,
    );
    if (!result) {
      if (policy.failOpen) {
        leaseStats.failOpen++;
        console.warn(JSON.stringify({ msg: "concurrency limit failed open", policy: policy.name }));
        await next();
        return;
      }
      leaseStats.failClosed++;
      throw new ProblemError(
        503,
        "unavailable",
        `concurrency limit "${policy.name}" cannot be checked`,
        { headers: { "retry-after": String(unavailableRetryS) } },
      );
    }
    if (!result.ok) {
      leaseStats.rejected++;
      throw new ProblemError(
        429,
        "rate_limited",
        `concurrency limit "${policy.name}" reached: ${policy.limit} requests in flight`,
        {
          headers: { "retry-after": String(Math.max(1, Math.ceil(result.retryAfterMs / 1000))) },
          extensions: { policy: policy.name },
        },
      );
    }
    leaseStats.granted++;
    const budget = c.get("budget") as { aborted?: AbortSignal } | undefined;
    const signal = budget?.aborted
      ? AbortSignal.any([c.req.raw.signal, budget.aborted])
      : c.req.raw.signal;
    try {
      await holding(result.lease, policy.ttlMs, signal, () => next());
    } catch (err) {
      // Hono turns handler errors into responses before next() returns, so only an abandoned
      // request (client gone, budget or lease time out) lands here; nobody reads this answer
      // (or withBudget already sent its 504).
      throw new ProblemError(504, "timeout", "the request was abandoned", { cause: err });
    }
  };
}

metrics.collect(() =>
  Object.entries(leaseStats).map(([event, value]) => ({
    name: "lease_events_total",
    labels: { event },
    value,
    type: "counter" as const,
    help: "Concurrency leases granted, rejected, decided without the store, released late",
  }))
);
