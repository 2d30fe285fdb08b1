/**
 * Sliding-window rate limits: `@upstash/ratelimit` in Redis, the same approximation in
 * memory for the embedded default. A policy may hold several windows (10/minute and
 * 100/hour); all of a request's windows go out in one tick, so the client's auto-pipelining
 * sends them as one HTTP request. Answers carry the IETF draft-11 headers; a 429 says when a
 * request will really pass.
 *
 * @module
 */
import { Ratelimit } from "@upstash/ratelimit";
import type { Redis } from "@upstash/redis";
import type { Context, MiddlewareHandler } from "hono";
import { type Clock, systemClock } from "./clock.ts";
import { config } from "./config.ts";
import { metrics } from "./metrics.ts";
import { ProblemError } from "./problem.ts";
import { redis as defaultRedis, redisKey } from "./redis.ts";
import { timed } from "./timing.ts";

/** One window of a policy. */
export interface RateWindow {
  limit: number;
  windowS: number;
}

/** A named limit. */
export interface RateLimitPolicy {
  /** Shown in headers and problems, e.g. `feed`. */
  name: string;
  windows: RateWindow[];
  /** When Redis can't answer: let the request through (cheap reads) or refuse it (503). */
  failOpen: boolean;
  /** How long to wait for Redis before applying `failOpen` (default `RATE_LIMIT_DECISION_MS`). */
  decisionMs?: number;
}

/** What one window decided. */
export interface WindowDecision {
  success: boolean;
  remaining: number;
  /** Epoch ms at which a refused request would pass (now when allowed). */
  retryAt: number;
  /** Epoch ms at which the current window ends. */
  reset: number;
}

/** What a policy decided for one request. */
export interface RateLimitDecision {
  success: boolean;
  windows: (WindowDecision & RateWindow)[];
  /** Epoch ms at which a refused request would pass. */
  retryAt: number;
  /** True when the store could not answer and `failOpen` decided. */
  degraded: boolean;
}

/**
 * When the weighted two-window count `floor(previous × (1 − elapsed)) + current` first drops
 * below `limit` (the formula @upstash/ratelimit's slidingWindow uses), as epoch ms. Without it
 * Retry-After could only say "next window", which is often far too late or too early.
 */
export function slidingWindowRetryAt(
  o: { limit: number; windowMs: number; now: number; current: number; previous: number },
): number {
  const start = Math.floor(o.now / o.windowMs) * o.windowMs;
  if (o.current < o.limit) {
    if (o.previous === 0) return o.now;
    // floor(x) < k ⇔ x < k for integer k: (1 - p) × previous < limit - current
    const p = 1 - (o.limit - o.current) / o.previous;
    return Math.max(o.now, Math.floor(start + p * o.windowMs) + 1);
  }
  // Wait for the next window, where today's count becomes the weighted previous one.
  return start + o.windowMs + Math.floor((1 - o.limit / o.current) * o.windowMs) + 1;
}

/** A sliding-window counter store. */
export interface WindowStore {
  /** Checks and counts one request; `rate: -1` refunds one. */
  limit(identifier: string, rate?: number): Promise<WindowDecision>;
  /** When this isolate already knows `identifier` is refused: until when (epoch ms). */
  blockedUntil?(identifier: string): number | undefined;
}

/** Redis through `@upstash/ratelimit`, with an exact retry time on refusal. */
export class RedisWindowStore implements WindowStore {
  readonly #ratelimit: Ratelimit;
  /** Per isolate: identifiers known to be exhausted are refused with no round trip. */
  readonly #blocked = new Map<string, number>();

  constructor(
    readonly redis: Redis,
    readonly prefix: string,
    readonly window: RateWindow,
  ) {
    this.#ratelimit = new Ratelimit({
      redis,
      limiter: Ratelimit.slidingWindow(this.window.limit, `${this.window.windowS} s`),
      prefix,
      ephemeralCache: this.#blocked,
      timeout: 0, // we decide on timeouts ourselves, per policy
      analytics: false,
    });
  }

  blockedUntil(identifier: string): number | undefined {
    const until = this.#blocked.get(identifier);
    return until !== undefined && until > Date.now() ? until : undefined;
  }

  async limit(identifier: string, rate = 1): Promise<WindowDecision> {
    const res = await this.#ratelimit.limit(identifier, { rate });
    if (res.success) {
      return { success: true, remaining: res.remaining, retryAt: Date.now(), reset: res.reset };
    }
    if (res.reason === "cacheBlock") {
      return { success: false, remaining: 0, retryAt: res.reset, reset: res.reset };
    }
    // Refused by Redis: read both windows' counts (only on this rare path) for the real time.
    const windowMs = this.window.windowS * 1000;
    const now = Date.now();
    const current = Math.floor(now / windowMs);
    const [cur, prev] = await this.redis.mget<(number | null)[]>(
      `${this.prefix}:${identifier}:${current}`,
      `${this.prefix}:${identifier}:${current - 1}`,
    );
    const retryAt = slidingWindowRetryAt({
      limit: this.window.limit,
      windowMs,
      now,
      current: Number(cur ?? 0),
      previous: Number(prev ?? 0),
    });
    this.#blocked.set(identifier, retryAt); // the library would block until the window ends
    return { success: false, remaining: 0, retryAt, reset: res.reset };
  }
}

/** The same approximation in this process's memory (the embedded default). */
export class MemoryWindowStore implements WindowStore {
  readonly #counts = new Map<string, number>();

  constructor(readonly window: RateWindow, readonly clock: Clock = systemClock) {}

  limit(identifier: string, rate = 1): Promise<WindowDecision> {
    const now = this.clock();
    const windowMs = this.window.windowS * 1000;
    const w = Math.floor(now / windowMs);
    const current = this.#counts.get(`${identifier}:${w}`) ?? 0;
    const previous = this.#counts.get(`${identifier}:${w - 1}`) ?? 0;
    const weighted = Math.floor((1 - (now % windowMs) / windowMs) * previous);
    const reset = (w + 1) * windowMs;
    if (rate > 0 && weighted + current >= this.window.limit) {
      const retryAt = slidingWindowRetryAt({
        limit: this.window.limit,
        windowMs,
        now,
        current,
        previous,
      });
      return Promise.resolve({ success: false, remaining: 0, retryAt, reset });
    }
    this.#counts.set(`${identifier}:${w}`, current + rate);
    this.#counts.delete(`${identifier}:${w - 2}`);
    const remaining = Math.max(0, this.window.limit - (current + rate + weighted));
    return Promise.resolve({ success: true, remaining, retryAt: now, reset });
  }
}

/** A policy bound to its stores. */
export class RateLimiter {
  readonly #stores: WindowStore[];

  constructor(
    readonly policy: RateLimitPolicy,
    options: { redis?: Redis | null; prefix?: string; clock?: Clock } = {},
  ) {
    const redis = options.redis === undefined ? defaultRedis : options.redis;
    const prefix = options.prefix ?? redisKey("rl");
    this.#stores = policy.windows.map((w) =>
      redis
        ? new RedisWindowStore(redis, `${prefix}${policy.name}:${w.windowS}`, w)
        : new MemoryWindowStore(w, options.clock)
    );
  }

  /** Checks and counts one request for `identifier` against every window. */
  async check(identifier: string): Promise<RateLimitDecision> {
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
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((resolve) => {
      timer = setTimeout(resolve, policy.decisionMs ?? config.limits.decisionMs, null);
    });
    try {
      const checks = Promise.all(this.#stores.map((s) => s.limit(identifier)));
      checks.catch(() => {}); // may settle after the timeout
      const results = await timed("redis", Promise.race([checks.catch(() => null), timeout]));
      if (results) {
        const success = results.every((r) => r.success);
        if (!success) {
          // A refused request must not use up the windows that let it through.
          this.#stores.forEach((s, i) =>
            results[i].success && s.limit(identifier, -1).catch(() => {})
          );
          metrics.inc("rate_limit_rejections_total", { policy: policy.name });
        }
        return {
          success,
          windows: results.map((r, i) => ({ ...r, ...policy.windows[i] })),
          retryAt: Math.max(...results.map((r) => r.retryAt)),
          degraded: false,
        };
      }
    } finally {
      clearTimeout(timer);
    }
    metrics.inc("rate_limit_store_failures_total", {
      policy: policy.name,
      decision: policy.failOpen ? "open" : "closed",
    });
    if (policy.failOpen) {
      console.warn(JSON.stringify({ msg: "rate limit failed open", policy: policy.name }));
    }
    return { success: policy.failOpen, windows: [], retryAt: Date.now() + 5000, degraded: true };
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
      if (decision.degraded) {
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
