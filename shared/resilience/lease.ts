/**
 * Concurrency leases: at most `limit` requests in flight per key across every isolate
 * (e.g. recall: 5 per user). `@upstash/ratelimit` only limits rates, so this is ours.
 *
 * A lease is a member of a sorted set scored by its expiry. Acquire (one Lua script,
 * shared/resilience/lease.lua.ts: drop expired, count, add) and release (one ZREM) are one round trip
 * each, and a lease expires by itself after `ttlMs`, so an isolate killed mid-request never
 * leaks a slot for longer.
 *
 * {@link withSlot} holds one slot around a piece of work (recall-resolve's providers call);
 * {@link concurrencyLimit} is the same as route middleware (searches).
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import type { Context, MiddlewareHandler } from "hono";
import { type Clock, systemClock } from "./clock.ts";
import { acquireLeaseScript } from "./lease.lua.ts";
import { ProblemError } from "../http/problem.ts";
import { metrics } from "../http/metrics.ts";
import { runScript } from "../data/redis_script.ts";
import { timed } from "../http/timing.ts";
import { untilAborted, withinMs } from "./abort.ts";

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

/** Where slots live: Redis leases across isolates ({@link RedisLeaseStore}). */
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

/** Refuses a limit below 1 or a lifetime below 1 ms. */
export function checkOptions({ limit, ttlMs }: LeaseOptions): void {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`lease limit ${limit} < 1`);
  if (!(ttlMs >= 1)) throw new RangeError(`lease ttlMs ${ttlMs} < 1`);
}

/** A lease whose release runs `drop` once, never rejecting (it would expire anyway). */
export function makeLease(
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

/** Leases in Redis, shared by every isolate. Expiry is scored with `clock` (tests move it). */
export class RedisLeaseStore implements LeaseStore {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #clock: Clock;
  readonly #pending = new Set<Promise<unknown>>();

  /** `prefix` is prepended to every key (end it with `:`). */
  constructor(redis: Redis, prefix: string, clock: Clock = systemClock) {
    this.#redis = redis;
    this.#prefix = prefix;
    this.#clock = clock;
  }

  /** One round trip (EVALSHA; the first call after a Redis restart adds the EVAL fallback). */
  async acquire(key: string, options: LeaseOptions): Promise<LeaseResult> {
    checkOptions(options);
    const now = Math.floor(this.#clock());
    const id = crypto.randomUUID();
    const fullKey = this.#prefix + key;
    const [granted, retryAfterMs] = await this.#track(
      runScript(this.#redis, acquireLeaseScript, [fullKey], [
        now,
        options.ttlMs,
        options.limit,
        id,
      ]),
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
  const attempt = store.acquire(key, options).catch(() => null);
  return await withinMs(attempt, decisionMs, (late) => {
    if (!late?.ok) return;
    leaseStats.lateReleased++;
    late.lease.release().catch(() => {});
  });
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

/** One named concurrency limit: how many slots per key, and what happens without a decision. */
export interface SlotPolicy {
  /** Shown in problems (`policy`) and part of the Redis key, e.g. `recall-concurrency`. */
  name: string;
  /** Slots held at once per key. */
  limit: number;
  /** Lease lifetime: the work's budget plus a margin. */
  ttlMs: number;
  /** When the store can't answer in time: run anyway, or answer 503. */
  failOpen: boolean;
  /** How long to wait for the store before applying `failOpen`. */
  decisionMs: number;
}

/** Seconds a client should wait before retrying when the store is unreachable. */
const unavailableRetryS = 5;

/**
 * The store could not decide for `p` in time: returns when `p` fails open (the caller runs
 * unlimited), else throws the 503. Counted either way.
 */
export function undecided(p: Pick<SlotPolicy, "name" | "failOpen">): void {
  if (p.failOpen) {
    leaseStats.failOpen++;
    console.warn(JSON.stringify({ msg: "concurrency limit failed open", policy: p.name }));
    return;
  }
  leaseStats.failClosed++;
  throw new ProblemError(
    503,
    "unavailable",
    `concurrency limit "${p.name}" cannot be checked`,
    { headers: { "retry-after": String(unavailableRetryS) } },
  );
}

/** The 429 of a key whose `p.limit` slots are all taken (counted as a rejection). */
export function slotsTaken(
  p: Pick<SlotPolicy, "name" | "limit">,
  retryAfterMs: number,
): ProblemError {
  leaseStats.rejected++;
  return new ProblemError(
    429,
    "rate_limited",
    `concurrency limit "${p.name}" reached: ${p.limit} requests in flight`,
    {
      headers: { "retry-after": String(Math.max(1, Math.ceil(retryAfterMs / 1000))) },
      extensions: { policy: p.name },
    },
  );
}

/**
 * Holds one of `key`'s slots (under `p.name`) while `fn` runs: 429 problem naming the policy,
 * with Retry-After, when every slot is taken; run unlimited (failOpen) or 503 when the store
 * can't decide within `p.decisionMs`. The slot is released on every path: success, throw,
 * `signal` abort and `ttlMs` running out (then `fn`'s signal aborts and we stop waiting for it).
 */
export async function withSlot<T>(
  store: LeaseStore,
  p: SlotPolicy,
  key: string,
  signal: AbortSignal | undefined,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  checkOptions(p);
  signal?.throwIfAborted();
  const result = await acquireWithin(store, `${p.name}:${key}`, p, p.decisionMs);
  if (!result) {
    undecided(p);
    return await fn(signal ?? new AbortController().signal);
  }
  if (!result.ok) throw slotsTaken(p, result.retryAfterMs);
  leaseStats.granted++;
  return await holding(result.lease, p.ttlMs, signal, fn);
}

/** {@link SlotPolicy} for a route, with whose slots a request takes. */
export interface ConcurrencyPolicy extends Omit<SlotPolicy, "decisionMs"> {
  /** Whose slots a request takes, e.g. the user id. */
  key: (c: Context) => string;
  /** Default 50 ms. */
  decisionMs?: number;
  /** Where the slots live: the isolate's Redis leases (`deps.leases`), or `KeyedSlots` (slots.ts). */
  store: LeaseStore;
}

/**
 * Middleware: {@link withSlot} around the rest of the request, keyed by `key(c)`. The slot is
 * also released when the request is abandoned (client gone or budget expired:
 * `c.req.raw.signal`, `c.var.budget.aborted`).
 */
export function concurrencyLimit(policy: ConcurrencyPolicy): MiddlewareHandler {
  checkOptions(policy);
  const p: SlotPolicy = { ...policy, decisionMs: policy.decisionMs ?? 50 };
  return async (c, next) => {
    const budget = c.get("budget") as { aborted?: AbortSignal } | undefined;
    const signal = budget?.aborted
      ? AbortSignal.any([c.req.raw.signal, budget.aborted])
      : c.req.raw.signal;
    try {
      await withSlot(policy.store, p, policy.key(c), signal, () => next());
    } catch (err) {
      if (err instanceof ProblemError) throw err; // refused (429) or undecided (503)
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
