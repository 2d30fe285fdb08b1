/**
 * Sliding-window rate limits: `@upstash/ratelimit` in Redis, the same approximation in
 * memory for the embedded default. A policy may hold several windows (10/minute and
 * 100/hour); all of a request's windows go out in one tick, so the client's auto-pipelining
 * sends them as one HTTP request. Answers carry the IETF draft-11 headers; a 429 says when a
 * request will really pass. When Redis cannot decide in time, the isolate's own limiter of the
 * same policy decides (fail-open policies) or the request is refused (fail-closed ones), and
 * Redis is told afterwards: "fail open" never means unlimited.
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import type { Context, MiddlewareHandler } from "hono";
import type { Clock } from "./clock.ts";
import { loopDeadline } from "./loop_deadline.ts";
import { type PendingLease, TokenLeases } from "./ratelimit_lease.ts";
import {
  MemoryWindowStore,
  type RateWindow,
  RedisWindowStore,
  type WindowDecision,
  type WindowStore,
} from "./ratelimit_store.ts";
import { metrics } from "../http/metrics.ts";
import { ProblemError } from "../http/problem.ts";
import { timed } from "../http/timing.ts";

/** A named limit. */
export interface RateLimitPolicy {
  /** Shown in headers and problems, e.g. `feed`. */
  name: string;
  windows: RateWindow[];
  /**
   * When Redis can't answer: decide in the isolate with the same windows (cheap requests) or
   * refuse (503, for routes whose cost forbids even a per-isolate allowance: LLM calls).
   */
  failOpen: boolean;
  /**
   * How long Redis may take to decide, in event-loop time (see {@link loopDeadline}), before
   * `failOpen` applies (default `RATE_LIMIT_DECISION_MS`).
   */
  decisionMs?: number;
  /**
   * Spend blocks of tokens leased from Redis instead of asking it per request
   * (ratelimit_lease.ts): a warm request costs no Redis command, one user on one isolate still
   * gets exactly the limit, and across isolates never more (possibly less: tokens leased and not
   * yet spent count as used). Fail-open policies only; off by default. Not for limits that must
   * be exact per request across isolates (recall's, and every fail-closed one).
   */
  leased?: boolean;
}

/** What a policy decided for one request. */
export interface RateLimitDecision {
  success: boolean;
  windows: (WindowDecision & RateWindow)[];
  /** Epoch ms at which a refused request would pass. */
  retryAt: number;
  /**
   * True when Redis could not decide in time: the isolate's limiter decided (`windows` are its
   * counts), or, with no windows, the fail-closed policy refused.
   */
  degraded: boolean;
}

/** Options of a {@link RateLimiter}. */
export interface RateLimiterOptions {
  /** Redis, which decides; `null`: this isolate's memory alone (unit tests of the algorithm). */
  redis: Redis | null;
  /** Key prefix, e.g. `rockout:rl`. */
  prefix: string;
  clock?: Clock;
  /** Wall-clock bound on waiting for Redis (`REDIS_TIMEOUT_MS`; default 1000). */
  maxWaitMs?: number;
  /** Default decision window of policies that set none (`RATE_LIMIT_DECISION_MS`; default 50). */
  decisionMs?: number;
}

/** At most this many locally admitted requests wait to be counted in Redis, per limiter. */
const maxPending = 10_000;

/**
 * A policy bound to its stores. With Redis, Redis decides; when it cannot within the decision
 * window (slow, down, or the loop too busy to hear it), a fail-open policy falls back to the
 * isolate's own limiter of the same windows (degraded mode) and a fail-closed one refuses.
 * The isolate's limiter counts every request this isolate admits, whoever decided, so one
 * isolate never admits more than the limit, even while switching between the two; a request it
 * admitted alone is counted in Redis when Redis answers (late, or after it comes back).
 */
export class RateLimiter {
  readonly #stores: WindowStore[];
  /** The isolate's own limiter: fail-open policies with Redis only. */
  readonly #local: MemoryWindowStore[] | null;
  /** Locally admitted requests Redis has not counted: `store\0window\0identifier` → count. */
  readonly #pending = new Map<string, number>();
  readonly #late = new Set<Promise<unknown>>();
  #flushing = false;
  #lastWarn = 0;
  readonly #maxWaitMs: number;

  readonly #decisionMs: number;
  readonly #clock: Clock;
  /** Leased blocks of tokens: `leased` policies with Redis only. */
  readonly #leases: TokenLeases | null = null;

  constructor(readonly policy: RateLimitPolicy, options: RateLimiterOptions) {
    const { redis, prefix } = options;
    const clock = this.#clock = options.clock ?? (() => Date.now());
    this.#stores = policy.windows.map((w) =>
      redis
        ? new RedisWindowStore(redis, `${prefix}${policy.name}:${w.windowS}`, w)
        : new MemoryWindowStore(w, clock)
    );
    this.#local = redis && policy.failOpen
      ? policy.windows.map((w) => new MemoryWindowStore(w, clock))
      : null;
    this.#maxWaitMs = options.maxWaitMs ?? 1000;
    this.#decisionMs = options.decisionMs ?? 50;
    if (policy.leased && !policy.failOpen) {
      throw new RangeError(`rate limit "${policy.name}": a leased policy must fail open`);
    }
    if (policy.leased && redis) {
      const labels = { policy: policy.name };
      this.#leases = new TokenLeases({
        redis,
        prefixes: (this.#stores as RedisWindowStore[]).map((s) => s.prefix),
        windows: policy.windows,
        clock,
        unpaid: (identifier, buckets, n, redisDown) => {
          if (redisDown) buckets.forEach((b, i) => this.#addPending(i, b, identifier, n));
          else this.#addNow(identifier, buckets, n);
        },
        observe: (outcome, tokens) => {
          metrics.inc("rate_limit_leases_total", { ...labels, outcome });
          if (tokens) metrics.inc("rate_limit_leased_tokens_total", labels, tokens);
        },
      });
    }
  }

  /** Locally admitted requests not yet counted in Redis (for tests and metrics). */
  get pending(): number {
    let n = 0;
    for (const v of this.#pending.values()) n += v;
    return n;
  }

  /** Checks and counts one request for `identifier` against every window. */
  async check(identifier: string): Promise<RateLimitDecision> {
    if (this.#leases) return await this.#checkLeased(this.#leases, identifier);
    const { policy } = this;
    const blocked = this.#stores.map((s) => s.blockedUntil?.(identifier));
    if (blocked.some((b) => b !== undefined)) {
      // Refused without a round trip: one window is known to be exhausted in this isolate.
      metrics.inc("rate_limit_rejections_total", { policy: policy.name });
      return {
        success: false,
        windows: policy.windows.map((w, i) => ({
          ...w,
          success: blocked[i] === undefined,
          remaining: 0,
          retryAt: blocked[i] ?? Date.now(),
          reset: blocked[i] ?? Date.now(),
        })),
        retryAt: Math.max(...blocked.map((b) => b ?? 0)),
        degraded: false,
      };
    }
    if (!(this.#stores[0] instanceof RedisWindowStore)) {
      const results = await Promise.all(this.#stores.map((s) => s.limit(identifier)));
      return this.#settle(identifier, this.#stores, results, false);
    }
    this.#flushPending(); // queued before the check: the same pipeline, counted first
    const checks = Promise.all(this.#stores.map((s) => s.limit(identifier)));
    const deadline = loopDeadline(policy.decisionMs ?? this.#decisionMs, this.#maxWaitMs);
    const results = await timed(
      "redis",
      Promise.race([checks.catch(() => null), deadline.done.then(() => null)]),
    ).finally(deadline.cancel);
    if (results) {
      const local = this.#local;
      if (local && results.every((r) => r.success)) {
        // Keep the isolate's own count: what it admits must fit the limit in degraded mode too.
        const own = this.#admitLocally(identifier);
        if (!own.every((r) => r.success)) {
          // Redis forgot what this isolate admitted (a restart, a lost key): the tighter wins.
          this.#stores.forEach((s) => s.limit(identifier, -1).catch(() => {}));
          return this.#settle(identifier, local, own, false);
        }
      }
      return this.#settle(identifier, this.#stores, results, false);
    }
    return this.#degraded(identifier, checks);
  }

  /** Redis could not decide in time: the isolate's limiter decides, or the policy refuses. */
  #degraded(identifier: string, checks: Promise<WindowDecision[]>): RateLimitDecision {
    const local = this.#local;
    const own = local ? this.#admitLocally(identifier) : null;
    const admitted = own?.every((r) => r.success) ?? false;
    const windowsAt = this.policy.windows.map((w) => Math.floor(Date.now() / (w.windowS * 1000)));
    // Reconcile when Redis answers: it must count what we admitted and forget what we refused.
    this.#track(checks.then((late) =>
      Promise.all(late.map(async (r, i) => {
        const store = this.#stores[i] as RedisWindowStore;
        if (admitted && !r.success) {
          await store.add(identifier, windowsAt[i], 1)
            .catch(() => this.#addPending(i, windowsAt[i], identifier));
        }
        if (!admitted && r.success) await store.limit(identifier, -1);
      })), () => {
      if (admitted) windowsAt.forEach((w, i) => this.#addPending(i, w, identifier));
    }));
    this.#decidedWithoutRedis(local !== null);
    if (!local || !own) {
      return { success: false, windows: [], retryAt: Date.now() + 5000, degraded: true };
    }
    return this.#settle(identifier, local, own, true);
  }

  /** Metrics and a warning: Redis could not decide, the isolate did (or the policy refused). */
  #decidedWithoutRedis(local: boolean): void {
    const { policy } = this;
    metrics.inc("rate_limit_store_failures_total", {
      policy: policy.name,
      decision: local ? "local" : "closed",
    });
    if (local && Date.now() - this.#lastWarn > 10_000) {
      this.#lastWarn = Date.now(); // one line per policy per 10 s, not one per request
      console.warn(
        JSON.stringify({ msg: "rate limit decided in the isolate", policy: policy.name }),
      );
    }
  }

  /**
   * A leased policy: a token of the isolate's block if it holds one (no Redis at all), else a
   * lease from Redis, shared by every request of the identifier waiting meanwhile. Redis still
   * decides within the decision window, or the isolate's limiter does (degraded mode); the
   * isolate's limiter counts every admission either way, as for other policies.
   */
  async #checkLeased(leases: TokenLeases, identifier: string): Promise<RateLimitDecision> {
    const { policy } = this;
    let deadline: ReturnType<typeof loopDeadline> | undefined;
    try {
      for (;;) {
        const now = this.#clock();
        const refused = leases.refused(identifier, now);
        if (refused) {
          metrics.inc("rate_limit_rejections_total", { policy: policy.name });
          return {
            success: false,
            windows: refused.map((r, i) => ({ ...r, ...policy.windows[i] })),
            retryAt: Math.max(...refused.map((r) => r.retryAt)),
            degraded: false,
          };
        }
        const block = leases.take(identifier, now);
        if (block) {
          const own = this.#admitLocally(identifier);
          if (!own.every((r) => r.success)) {
            // Redis forgot what this isolate admitted (a restart, a lost key): the tighter wins.
            leases.giveBack(identifier);
            return this.#settle(identifier, this.#local!, own, false);
          }
          return {
            success: true,
            windows: block.map((b, i) => ({
              ...b,
              remaining: Math.min(b.remaining, own[i].remaining),
              ...policy.windows[i],
            })),
            retryAt: now,
            degraded: false,
          };
        }
        this.#flushPending(); // queued before the lease: the same pipeline, counted first
        const { lease, sent } = leases.acquire(identifier, now);
        deadline ??= loopDeadline(policy.decisionMs ?? this.#decisionMs, this.#maxWaitMs);
        const waited = leases.wait(identifier, lease, deadline.done);
        // The request that sent the lease has it timed by runScript; the others wait on it.
        const outcome = sent ? await waited : await timed("redis", waited, 0);
        if (outcome !== "ok") return this.#degradedLeased(leases, identifier, lease, outcome);
      }
    } finally {
      deadline?.cancel();
    }
  }

  /**
   * Redis did not answer a lease in time (`late`) or failed: the isolate's limiter decides. An
   * admission made while the lease is still in flight is paid from its grant when it comes;
   * otherwise Redis counts it later (at once, or when it is back).
   */
  #degradedLeased(
    leases: TokenLeases,
    identifier: string,
    lease: PendingLease,
    outcome: "late" | "failed",
  ): RateLimitDecision {
    const own = this.#admitLocally(identifier);
    if (own.every((r) => r.success)) {
      const now = this.#clock();
      const buckets = this.policy.windows.map((w) => Math.floor(now / (w.windowS * 1000)));
      if (outcome === "failed" || !leases.owe(lease, buckets)) {
        if (lease.settled && outcome === "late") this.#addNow(identifier, buckets, 1);
        else buckets.forEach((b, i) => this.#addPending(i, b, identifier));
      } else {
        this.#track(lease.done);
      }
    }
    this.#decidedWithoutRedis(true);
    return this.#settle(identifier, this.#local!, own, true);
  }

  /** Counts in Redis `n` admissions the isolate made alone, now (pending if Redis fails). */
  #addNow(identifier: string, buckets: number[], n: number): void {
    this.#track(
      Promise.all(buckets.map((b, i) =>
        (this.#stores[i] as RedisWindowStore).add(identifier, b, n)
          .catch(() => this.#addPending(i, b, identifier, n))
      )),
    );
  }

  /** Checks and counts one request in the isolate's limiter; all windows or none. */
  #admitLocally(identifier: string): WindowDecision[] {
    const local = this.#local!;
    const own = local.map((s) => s.decide(identifier));
    if (!own.every((r) => r.success)) {
      local.forEach((s, i) => own[i].success && s.decide(identifier, -1));
    }
    return own;
  }

  /** Builds the decision; a refused request must not use up the windows that let it through. */
  #settle(
    identifier: string,
    stores: WindowStore[],
    results: WindowDecision[],
    degraded: boolean,
  ): RateLimitDecision {
    const success = results.every((r) => r.success);
    if (!success) {
      if (stores !== this.#local) {
        stores.forEach((s, i) => results[i].success && s.limit(identifier, -1).catch(() => {}));
      }
      metrics.inc("rate_limit_rejections_total", { policy: this.policy.name });
    }
    return {
      success,
      windows: results.map((r, i) => ({ ...r, ...this.policy.windows[i] })),
      retryAt: Math.max(...results.map((r) => r.retryAt)),
      degraded,
    };
  }

  /** Keeps `work` (a late reconciliation) until it settles, for {@link idle}. */
  #track(work: Promise<unknown>): void {
    const p = work.catch(() => {}).finally(() => this.#late.delete(p));
    this.#late.add(p);
  }

  /** Resolves when every late Redis answer seen so far has been reconciled (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.#late.size) await Promise.all([...this.#late]);
  }

  #addPending(store: number, w: number, identifier: string, n = 1): void {
    const key = `${store}\0${w}\0${identifier}`;
    if (!this.#pending.has(key) && this.#pending.size >= maxPending) {
      metrics.inc("rate_limit_reconcile_dropped_total", { policy: this.policy.name });
      return;
    }
    this.#pending.set(key, (this.#pending.get(key) ?? 0) + n);
  }

  /** Counts in Redis what the isolate admitted while Redis could not answer. */
  #flushPending(): void {
    if (this.#pending.size === 0 || this.#flushing) return;
    this.#flushing = true;
    const batch = [...this.#pending];
    this.#pending.clear();
    this.#track(
      Promise.all(batch.map(async ([key, n]) => {
        const [store, w, identifier] = key.split("\0");
        try {
          await (this.#stores[Number(store)] as RedisWindowStore).add(identifier, Number(w), n);
        } catch {
          const k = key;
          this.#pending.set(k, (this.#pending.get(k) ?? 0) + n);
        }
      })).finally(() => this.#flushing = false),
    );
  }
}

/** Sets `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-11). */
function setHeaders(c: Context, policy: RateLimitPolicy, d: RateLimitDecision): void {
  const label = (w: RateWindow) =>
    policy.windows.length > 1 ? `${policy.name}-${w.windowS}s` : policy.name;
  c.header(
    "RateLimit-Policy",
    policy.windows.map((w) => `"${label(w)}";q=${w.limit};w=${w.windowS}`).join(", "),
  );
  if (d.windows.length) {
    const now = Date.now();
    c.header(
      "RateLimit",
      d.windows.map((w) =>
        `"${label(w)}";r=${w.remaining};t=${Math.max(0, Math.ceil((w.reset - now) / 1000))}`
      ).join(", "),
    );
  }
}

/** Middleware enforcing `limiter` per `identify(c)` (user id, or client IP when anonymous). */
export function rateLimit(
  limiter: RateLimiter,
  identify: (c: Context) => string,
): MiddlewareHandler {
  return async (c, next) => {
    const { policy } = limiter;
    const decision = await limiter.check(identify(c));
    setHeaders(c, policy, decision);
    if (!decision.success) {
      const retryAfterS = Math.max(1, Math.ceil((decision.retryAt - Date.now()) / 1000));
      if (decision.degraded && decision.windows.length === 0) {
        throw new ProblemError(
          503,
          "unavailable",
          `rate limit "${policy.name}" cannot be checked right now`,
          {
            headers: { "retry-after": String(retryAfterS) },
            extensions: { policy: policy.name },
          },
        );
      }
      const tripped = decision.windows.filter((w) => !w.success)
        .map((w) => `${w.limit} per ${w.windowS} s`).join(" and ");
      throw new ProblemError(
        429,
        "rate_limited",
        `rate limit "${policy.name}" exceeded: ${tripped}`,
        {
          headers: { "retry-after": String(retryAfterS) },
          extensions: { policy: policy.name },
        },
      );
    }
    await next();
  };
}

/**
 * Middleware for routes anyone may read (no token needed), limited per client IP as
 * `identify` tells it (`clientIp`) by `limiter` (`deps.anonReads`: `ANON_READ_RATE_LIMIT_PER_MIN`).
 * Callers that present a token are counted the same way: a read that needs no identity is
 * limited by where it comes from.
 */
export function anonymousReads(
  limiter: RateLimiter,
  identify: (c: Context) => string,
): MiddlewareHandler {
  return rateLimit(limiter, identify);
}
