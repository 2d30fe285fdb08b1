/**
 * Hard per-request time budgets. Every outbound call takes `budget.signal(ownTimeout)`, an
 * AbortSignal that fires at `min(own timeout, what is left of the budget)` or when the
 * client goes away, so expiry really cancels fetches and queries instead of leaving them
 * running after we answered.
 *
 * @module
 */
import type { MiddlewareHandler } from "hono";
import { ProblemError } from "./problem.ts";

/** The time budget of one request. */
export class Budget {
  readonly #controller = new AbortController();
  readonly #deadline: number;

  constructor(readonly totalMs: number, parent?: AbortSignal) {
    this.#deadline = performance.now() + totalMs;
    if (parent) {
      if (parent.aborted) this.abort(parent.reason);
      else parent.addEventListener("abort", () => this.abort(parent.reason), { once: true });
    }
  }

  /** Milliseconds left, never negative. */
  remaining(): number {
    return Math.max(0, this.#deadline - performance.now());
  }

  /** Fires when the budget expires or the request is abandoned. */
  get aborted(): AbortSignal {
    return this.#controller.signal;
  }

  /** A signal for one outbound call: its own timeout, capped by what is left. */
  signal(ownTimeoutMs = Infinity): AbortSignal {
    const ms = Math.min(ownTimeoutMs, this.remaining());
    return AbortSignal.any([this.#controller.signal, AbortSignal.timeout(Math.max(1, ms))]);
  }

  /** Cancels everything still using this budget. */
  abort(reason?: unknown): void {
    this.#controller.abort(reason ?? new DOMException("request budget expired", "TimeoutError"));
  }
}

/**
 * Gives each request a Budget (`c.var.budget`) and answers 504 problem+json when it runs
 * out, aborting downstream work through the budget's signals.
 */
export function withBudget(totalMs: number): MiddlewareHandler<{ Variables: { budget: Budget } }> {
  return async (c, next) => {
    const budget = new Budget(totalMs, c.req.raw.signal);
    c.set("budget", budget);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        budget.abort();
        reject(new ProblemError(504, "timeout", `the request exceeded its ${totalMs} ms budget`));
      }, totalMs);
    });
    const work = next();
    work.catch(() => {}); // settled after a timeout: already answered
    try {
      await Promise.race([work, expired]);
    } finally {
      clearTimeout(timer);
    }
  };
}
