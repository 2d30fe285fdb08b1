/**
 * Request coalescing: identical concurrent work runs once. Inside an isolate, callers share
 * one promise (single-flight); across isolates, a Redis lock elects a leader that computes
 * and publishes its result briefly, while the others poll for it instead of stampeding the
 * database or a provider.
 *
 * This is not a cache: a call that starts after the leader finished computes again. Results
 * live only long enough for the waiters to read them, under a key named after the leader's
 * lock token, so a waiter can never pick up an older generation's result or failure.
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import { type Claim, claimScript, finishScript } from "./coalesce.lua.ts";
import { ProblemError } from "../http/problem.ts";
import { metrics } from "../http/metrics.ts";
import { runScript } from "../data/redis_script.ts";
import { untilAborted, withinMs } from "./abort.ts";

/** Tuning of one coalesced call; every field has a default. */
export interface CoalesceOptions {
  /** How long the leader's lock lives (≥ the compute's usual duration). Default 5000. */
  lockTtlMs?: number;
  /** How long a follower waits for the leader before computing itself. Default 2000. */
  waitMs?: number;
  /** How long a published result stays readable for waiters. Default 5000. */
  resultTtlMs?: number;
  /** How long a leader's failure stays readable for waiters (never longer). Default 2000. */
  failureTtlMs?: number;
  /** Longest wait for one Redis call before computing without coordination. Default 100. */
  decisionMs?: number;
  /**
   * Stops this caller's wait (it rejects with the reason). The shared work goes on for the
   * other callers: one impatient caller must not fail everybody else's request.
   */
  signal?: AbortSignal;
}

const defaults = {
  lockTtlMs: 5000,
  waitMs: 2000,
  resultTtlMs: 5000,
  failureTtlMs: 2000,
  decisionMs: 100,
};

/** Fills in defaults (an explicit `undefined` counts as unset); Redis wants whole ms. */
function withDefaults(options: CoalesceOptions): typeof defaults {
  const ms = (v: number | undefined, fallback: number) => Math.max(1, Math.ceil(v ?? fallback));
  return {
    lockTtlMs: ms(options.lockTtlMs, defaults.lockTtlMs),
    waitMs: Math.max(0, options.waitMs ?? defaults.waitMs),
    resultTtlMs: ms(options.resultTtlMs, defaults.resultTtlMs),
    failureTtlMs: ms(options.failureTtlMs, defaults.failureTtlMs),
    decisionMs: Math.max(0, options.decisionMs ?? defaults.decisionMs),
  };
}

/** Followers poll with this backoff: 20, 40, 80… ms, capped. */
const firstPollMs = 20;
const maxPollMs = 250;

/**
 * A follower's waits between polls of a lock, with the backoff above, never past `waitMs`
 * from now: each call sleeps and resolves true (one more poll counted in `stats`), or
 * resolves false once the time is up.
 */
export function followerPolls(
  waitMs: number,
  sleep: (ms: number) => Promise<void>,
  stats: Pick<CoalesceStats, "polls">,
): () => Promise<boolean> {
  const deadline = performance.now() + waitMs;
  let delay = firstPollMs;
  return async () => {
    const left = deadline - performance.now();
    if (left <= 0) return false;
    await sleep(Math.min(delay, left));
    delay = Math.min(delay * 2, maxPollMs);
    stats.polls++;
    return true;
  };
}

/** Counters of one coalescer. */
export interface CoalesceStats {
  /** Computed while holding the lock. */
  leader: number;
  /** Got another isolate's result (or its failure) from Redis. */
  followers: number;
  /** Joined a call already in flight in this isolate. */
  localShares: number;
  /** Computed without coordination: wait timed out, or Redis failed or was slow. */
  fallbacks: number;
  /** Became leader after the previous leader's lock expired without a result. */
  takeovers: number;
  /** Result polls sent by followers. */
  polls: number;
}

/** Zeroed counters (one set per isolate, or per coalescer in tests). */
export function newCoalesceStats(): CoalesceStats {
  return { leader: 0, followers: 0, localShares: 0, fallbacks: 0, takeovers: 0, polls: 0 };
}

/** Counts since the isolate started (exported in metrics). */
export const coalesceStats: CoalesceStats = newCoalesceStats();

/**
 * Single-flight: concurrent `run`s with the same key share one promise until it settles.
 * Failures are shared with the callers already waiting, never kept.
 */
export class SingleFlight {
  readonly #inFlight = new Map<string, Promise<unknown>>();

  /** Runs `fn` unless a call for `key` is in flight; `shared` says this call joined one. */
  run<T>(key: string, fn: () => Promise<T>): { promise: Promise<T>; shared: boolean } {
    const pending = this.#inFlight.get(key);
    if (pending) return { promise: pending as Promise<T>, shared: true };
    const promise = (async () => await fn())(); // a synchronous throw becomes a rejection
    this.#inFlight.set(key, promise);
    promise.finally(() => this.#inFlight.delete(key)).catch(() => {});
    return { promise, shared: false };
  }

  /** Whether a call for `key` is in flight. */
  has(key: string): boolean {
    return this.#inFlight.has(key);
  }

  /** Keys in flight right now. */
  get size(): number {
    return this.#inFlight.size;
  }
}

/** Runs identical concurrent work once. */
export interface Coalescer {
  /** `compute`'s result, computed here or by whoever is already computing `key`. */
  run<T>(key: string, compute: () => Promise<T>, options?: CoalesceOptions): Promise<T>;
}

/** A leader's outcome as waiters read it (JSON in Redis). */
export type Envelope =
  | { ok: true; v?: unknown }
  | { ok: false; error: string; problem?: ProblemShape };

type ProblemShape = Pick<ProblemError, "status" | "code" | "detail"> & {
  headers?: Record<string, string>;
  extensions?: Record<string, unknown>;
};

/** The leader's failure as a follower sees it (only the message crossed Redis). */
export class CoalescedFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CoalescedFailure";
  }
}

/** A leader's failure as its waiters read it (a ProblemError keeps its status and headers). */
export function failureEnvelope(err: unknown): Envelope {
  if (err instanceof ProblemError) {
    const { status, code, detail, options } = err;
    return {
      ok: false,
      error: err.message,
      problem: { status, code, detail, headers: options.headers, extensions: options.extensions },
    };
  }
  return { ok: false, error: err instanceof Error ? err.message : String(err) };
}

/** A leader's published envelope (raw or as the client parsed it): its value, or its failure thrown. */
export function settleEnvelope<T>(raw: unknown): T {
  // The client JSON-parses script replies by itself unless automatic deserialization is off.
  const envelope = (typeof raw === "string" ? JSON.parse(raw) : raw) as Envelope;
  if (envelope.ok) return envelope.v as T;
  const p = envelope.problem;
  if (p) {
    throw new ProblemError(p.status, p.code, p.detail, {
      headers: p.headers,
      extensions: p.extensions,
    });
  }
  throw new CoalescedFailure(envelope.error);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Construction options of a coalescer. */
export interface CoalescerOptions {
  /** Where to count (default: the isolate's {@link coalesceStats}). */
  stats?: CoalesceStats;
  /** The followers' wait between polls (tests hook it to know a follower is waiting). */
  sleep?: (ms: number) => Promise<void>;
}

/** Single-flight in the isolate plus a Redis lock across isolates. */
export class RedisCoalescer implements Coalescer {
  readonly #flights = new SingleFlight();
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #pending = new Set<Promise<unknown>>();
  readonly #sleep: (ms: number) => Promise<void>;
  readonly stats: CoalesceStats;

  /** `prefix` is prepended to every key (end it with `:`). */
  constructor(redis: Redis, prefix: string, options: CoalescerOptions = {}) {
    this.#redis = redis;
    this.#prefix = prefix;
    this.stats = options.stats ?? coalesceStats;
    this.#sleep = options.sleep ?? sleep;
  }

  run<T>(key: string, compute: () => Promise<T>, options: CoalesceOptions = {}): Promise<T> {
    const o = withDefaults(options);
    const { promise, shared } = this.#flights.run(key, () => this.#coordinate(key, compute, o));
    if (shared) this.stats.localShares++;
    return untilAborted(promise, options.signal);
  }

  /** Resolves once every Redis call this coalescer started has settled (shutdown, tests). */
  async idle(): Promise<void> {
    while (this.#pending.size) await Promise.allSettled([...this.#pending]);
  }

  async #coordinate<T>(
    key: string,
    compute: () => Promise<T>,
    o: typeof defaults,
  ): Promise<T> {
    const lockKey = `${this.#prefix}${key}:lock`;
    const resultKey = (token: string) => `${this.#prefix}${key}:result:${token}`;
    const token = crypto.randomUUID();
    const nextPoll = followerPolls(o.waitMs, this.#sleep, this.stats);
    let watched: string | null = null;
    for (;;) {
      const keys = watched ? [lockKey, resultKey(watched)] : [lockKey];
      const claim = await this.#tryClaim(keys, token, o);
      if (!claim) break;
      if (claim[0] === "done") {
        this.stats.followers++;
        return settleEnvelope<T>(claim[1]);
      }
      if (claim[0] === "lead") {
        if (watched) this.stats.takeovers++;
        this.stats.leader++;
        return await this.#lead(lockKey, resultKey(token), token, compute, o);
      }
      // Follow whoever holds the lock now: after an expiry that may be a new leader.
      watched = claim[1];
      if (!(await nextPoll())) break;
    }
    this.stats.fallbacks++;
    return await compute();
  }

  /** One claim round trip, or null when Redis fails or is slower than `decisionMs`. */
  async #tryClaim(keys: string[], token: string, o: typeof defaults): Promise<Claim | null> {
    const attempt = this.#track(
      runScript(this.#redis, claimScript, keys, [token, o.lockTtlMs]),
    ).catch((err) => {
      console.warn(JSON.stringify({ msg: "coalesce claim failed", error: String(err) }));
      return null;
    });
    // A lock won after we gave up would make the others wait for nothing: hand it back.
    return await withinMs(attempt, o.decisionMs, (claim) => {
      if (claim?.[0] === "lead") this.#release(keys[0], token);
    });
  }

  async #lead<T>(
    lockKey: string,
    resultKey: string,
    token: string,
    compute: () => Promise<T>,
    o: typeof defaults,
  ): Promise<T> {
    let value: T;
    try {
      value = await compute();
    } catch (err) {
      // Shared with the current waiters for failureTtlMs only; the next call computes again.
      const envelope = JSON.stringify(failureEnvelope(err));
      await this.#release(lockKey, token, { key: resultKey, envelope, ttlMs: o.failureTtlMs });
      throw err;
    }
    let envelope: string | undefined;
    try {
      envelope = JSON.stringify({ ok: true, v: value } satisfies Envelope);
    } catch {
      // Not JSON-serializable: publish nothing; waiters see the lock go and take over.
    }
    await this.#release(
      lockKey,
      token,
      envelope === undefined ? undefined : { key: resultKey, envelope, ttlMs: o.resultTtlMs },
    );
    return value;
  }

  /** Publishes (when given) and releases the lock in one round trip; errors are only logged. */
  #release(
    lockKey: string,
    token: string,
    publish?: { key: string; envelope: string; ttlMs: number },
  ): Promise<void> {
    const keys = publish ? [lockKey, publish.key] : [lockKey];
    const args = publish ? [token, publish.envelope, String(publish.ttlMs)] : [token];
    return this.#track(runScript(this.#redis, finishScript, keys, args)).then(() => {}, (err) => {
      console.warn(JSON.stringify({ msg: "coalesce release failed", error: String(err) }));
    });
  }

  #track<T>(work: Promise<T>): Promise<T> {
    this.#pending.add(work);
    work.finally(() => this.#pending.delete(work)).catch(() => {});
    return work;
  }
}

metrics.collect(() =>
  Object.entries(coalesceStats).map(([role, value]) => ({
    name: "coalesce_events_total",
    labels: { role },
    value,
    type: "counter" as const,
    help:
      "Coalesced computations: leaders, followers across isolates, shares in the isolate, fallbacks",
  }))
);
