/**
 * Sliding-window rate limits (`@upstash/ratelimit`), with the IETF draft-11 headers and a
 * fail-open / fail-closed decision that comes fast when Redis is slow or gone.
 *
 * @module
 */
import { Ratelimit } from "@upstash/ratelimit";
import type { Context, MiddlewareHandler } from "hono";
import { ProblemError } from "./problem.ts";
import { redis, redisKey } from "./redis.ts";
import { timed } from "./timing.ts";

/** One named limit. */
export interface RateLimitPolicy {
  /** Shown in headers and problems, e.g. `feed`. */
  name: string;
  /** Requests allowed per window. */
  limit: number;
  windowS: number;
  /** When Redis can't answer: let the request through (cheap reads) or refuse it (503). */
  failOpen: boolean;
  /** How long to wait for Redis before applying `failOpen`. */
  decisionMs?: number;
}

/** What a limit check decided. */
export interface RateLimitDecision {
  success: boolean;
  remaining: number;
  /** Epoch ms at which a refused request would pass. */
  retryAt: number;
  /** True when Redis could not answer and the policy decided. */
  degraded: boolean;
}

/** Counts since the isolate started (exported in metrics). */
export const rateLimitStats = { rejected: new Map<string, number>(), failOpen: 0, failClosed: 0 };

/** A policy bound to its store: Redis when configured, else this process's memory. */
export class RateLimiter {
  readonly #upstash: Ratelimit | null;
  readonly #memory = new Map<string, { window: number; current: number; previous: number }>();

  constructor(readonly policy: RateLimitPolicy) {
    this.#upstash = redis
      ? new Ratelimit({
        redis,
        limiter: Ratelimit.slidingWindow(policy.limit, `${policy.windowS} s`),
        prefix: redisKey("rl", policy.name),
        // Per isolate: identifiers known to be exhausted are refused with no round trip.
        ephemeralCache: new Map(),
        timeout: 0,
        analytics: false,
      })
      : null;
  }

  /** Checks and counts one request for `identifier`. */
  async check(identifier: string): Promise<RateLimitDecision> {
    if (!this.#upstash) return this.#checkMemory(identifier, Date.now());
    let timer: ReturnType<typeof setTimeout> | undefined;
    const decisionMs = this.policy.decisionMs ?? 100;
    const timeout = new Promise<null>((resolve) => timer = setTimeout(resolve, decisionMs, null));
    try {
      const res = await timed(
        "redis",
        Promise.race([this.#upstash.limit(identifier).catch(() => null), timeout]),
      );
      if (res) {
        return {
          success: res.success,
          remaining: res.remaining,
          retryAt: res.reset,
          degraded: false,
        };
      }
    } finally {
      clearTimeout(timer);
    }
    if (this.policy.failOpen) {
      rateLimitStats.failOpen++;
      console.warn(JSON.stringify({ msg: "rate limit failed open", policy: this.policy.name }));
    } else rateLimitStats.failClosed++;
    return {
      success: this.policy.failOpen,
      remaining: 0,
      retryAt: Date.now() + 5000,
      degraded: true,
    };
  }

  /** The same weighted two-window approximation as Upstash's slidingWindow, in memory. */
  #checkMemory(identifier: string, now: number): RateLimitDecision {
    const windowMs = this.policy.windowS * 1000;
    const window = Math.floor(now / windowMs);
    let state = this.#memory.get(identifier);
    if (!state || state.window < window - 1) state = { window, current: 0, previous: 0 };
    else if (state.window === window - 1) {
      state = { window, current: 0, previous: state.current };
    }
    const weight = 1 - (now % windowMs) / windowMs;
    const used = state.previous * weight + state.current;
    const success = used < this.policy.limit;
    if (success) state.current++;
    this.#memory.set(identifier, state);
    return {
      success,
      remaining: Math.max(0, Math.floor(this.policy.limit - used - (success ? 1 : 0))),
      retryAt: (window + 1) * windowMs,
      degraded: false,
    };
  }
}

function setHeaders(c: Context, policy: RateLimitPolicy, d: RateLimitDecision): number {
  const resetS = Math.max(0, Math.ceil((d.retryAt - Date.now()) / 1000));
  c.header("RateLimit-Policy", `"${policy.name}";q=${policy.limit};w=${policy.windowS}`);
  c.header("RateLimit", `"${policy.name}";r=${d.remaining};t=${resetS}`);
  return resetS;
}

/** Middleware enforcing `limiter` per `identify(c)` (user id, or client IP when anonymous). */
export function rateLimit(
  limiter: RateLimiter,
  identify: (c: Context) => string,
): MiddlewareHandler {
  return async (c, next) => {
    const { policy } = limiter;
    const decision = await limiter.check(identify(c));
    const resetS = setHeaders(c, policy, decision);
    if (!decision.success) {
      if (decision.degraded) {
        throw new ProblemError(
          503,
          "unavailable",
          `rate limit "${policy.name}" cannot be checked`,
          {
            headers: { "retry-after": "5" },
          },
        );
      }
      rateLimitStats.rejected.set(policy.name, (rateLimitStats.rejected.get(policy.name) ?? 0) + 1);
      throw new ProblemError(
        429,
        "rate_limited",
        `rate limit "${policy.name}" exceeded: ${policy.limit} requests per ${policy.windowS} s`,
        {
          headers: { "retry-after": String(Math.max(1, resetS)) },
          extensions: { policy: policy.name },
        },
      );
    }
    await next();
  };
}
