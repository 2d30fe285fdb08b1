/**
 * One call to an external API, the way every endpoint makes it: through the API's circuit
 * breaker, with a timeout of `min(its own, what is left of the request budget)` that really
 * aborts the request, and retries with backoff for idempotent calls (or calls carrying an
 * idempotency key), honouring `Retry-After`, never past the budget, within the API's retry
 * budget. Every attempt's outcome is counted by the breaker.
 *
 * @module
 */
import {
  CircuitBreaker,
  CircuitOpenError,
  type DeferredOutcomes,
  isBreakerFailure,
} from "./breaker.ts";
import type { Budget } from "../http/budget.ts";
import { metrics } from "../http/metrics.ts";
import { delay } from "./abort.ts";
import { backoffDelay, type BackoffOptions, parseRetryAfter, RetryBudget } from "./retry.ts";
import { timed } from "../http/timing.ts";

/** An external API as our calls see it. */
export interface Upstream {
  name: string;
  breaker: CircuitBreaker;
  /** Per attempt. */
  timeoutMs: number;
  /** Backoff for retryable calls; false never retries. */
  retry: BackoffOptions | false;
  retryBudget: RetryBudget;
  /**
   * A "closed" this isolate heard less than this long ago lets a call through without asking
   * the breaker's store (breaker.ts); 0 (default) asks every time.
   */
  trustClosedMs: number;
}

/**
 * Declares an API, once per isolate (at app creation): `breaker` is the API's breaker from
 * `deps.breakers.get(name)`, shared by every call of that API in the isolate.
 */
export function upstream(
  name: string,
  options: {
    timeoutMs: number;
    retry?: BackoffOptions | false;
    breaker: CircuitBreaker;
    trustClosedMs?: number;
  },
): Upstream {
  return {
    name,
    timeoutMs: options.timeoutMs,
    retry: options.retry ?? {},
    retryBudget: new RetryBudget(),
    breaker: options.breaker,
    trustClosedMs: options.trustClosedMs ?? 0,
  };
}

/** How a provider call ended, as endpoints report it. */
export type UpstreamFailure = "timeout" | "error" | "circuit_open";

const abortNames = new Set([
  "TimeoutError",
  "AbortError",
  "APIConnectionTimeoutError",
  "APIUserAbortError",
]);

/** Maps a thrown error to what an endpoint tells its client. */
export function upstreamFailure(err: unknown): UpstreamFailure {
  if (err instanceof CircuitOpenError) return "circuit_open";
  // An aborted call ended at its timeout or the request budget (the only aborts we make);
  // the openai SDK reports one as APIUserAbortError.
  const names = [(err as { name?: string })?.name, (err as object)?.constructor?.name];
  return names.some((n) => n && abortNames.has(n)) ? "timeout" : "error";
}

function retryAfterOf(err: unknown): number | undefined {
  const headers = (err as { headers?: Headers | Record<string, string> })?.headers;
  const value = headers instanceof Headers ? headers.get("retry-after") : headers?.["retry-after"];
  return parseRetryAfter(value);
}

/** Don't start an attempt with less time than this left. */
const minAttemptMs = 50;

/**
 * Calls `fn` with an AbortSignal for one attempt. Throws CircuitOpenError when the circuit is
 * open, else the last attempt's error. With `deferred`, an attempt's success is held there for
 * the breaker (sent when the caller flushes it) instead of recorded before this returns.
 */
export async function callUpstream<T>(
  api: Upstream,
  fn: (signal: AbortSignal) => Promise<T>,
  options: {
    budget?: Budget;
    idempotent?: boolean;
    idempotencyKey?: string;
    deferred?: DeferredOutcomes;
  } = {},
): Promise<T> {
  const { budget } = options;
  const retryable = api.retry !== false &&
    (options.idempotent || options.idempotencyKey !== undefined);
  const attempts = api.retry === false ? 1 : api.retry.attempts ?? 3;
  api.retryBudget.recordCall();
  for (let attempt = 1;; attempt++) {
    const start = performance.now();
    try {
      const value = await timed(
        "upstream",
        api.breaker.run(
          (probe) => {
            const own = budget ? budget.signal(api.timeoutMs) : AbortSignal.timeout(api.timeoutMs);
            return fn(probe ? AbortSignal.any([own, probe]) : own);
          },
          undefined,
          { trustClosedMs: api.trustClosedMs, deferred: options.deferred },
        ),
      );
      observe(api, "ok", start);
      return value;
    } catch (err) {
      if (err instanceof CircuitOpenError) {
        metrics.inc("upstream_calls_total", { api: api.name, outcome: "circuit_open" });
        throw err;
      }
      observe(api, upstreamFailure(err), start);
      if (!retryable || attempt >= attempts || !isBreakerFailure(err)) throw err;
      const wait = Math.max(backoffDelay(attempt, api.retry || {}), retryAfterOf(err) ?? 0);
      if (budget && wait + minAttemptMs >= budget.remaining()) throw err;
      if (!api.retryBudget.tryRetry()) throw err;
      metrics.inc("upstream_retries_total", { api: api.name });
      await delay(wait, budget?.aborted);
    }
  }
}

function observe(api: Upstream, outcome: string, start: number): void {
  metrics.inc("upstream_calls_total", { api: api.name, outcome });
  metrics.observe("upstream_duration_ms", { api: api.name }, performance.now() - start);
}
