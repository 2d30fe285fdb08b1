/**
 * Retries: exponential backoff with jitter, `Retry-After` honoured, never past the request
 * budget, and a retry budget per API so retries can't multiply load on a struggling
 * provider (Envoy's rule: retries at most a fraction of recent calls).
 *
 * @module
 */
import { type Clock, systemClock } from "./clock.ts";

/** Backoff settings. Defaults: 3 attempts, 1 s base, factor 2, 25% jitter. */
export interface BackoffOptions {
  /** Total attempts including the first. */
  attempts?: number;
  baseMs?: number;
  factor?: number;
  /** ± fraction of the delay, e.g. 0.25. */
  jitter?: number;
  maxDelayMs?: number;
}

/** The delay before retry number `retry` (1 = the first retry). */
export function backoffDelay(
  retry: number,
  o: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const base = (o.baseMs ?? 1000) * (o.factor ?? 2) ** (retry - 1);
  const jitter = o.jitter ?? 0.25;
  const delay = base * (1 - jitter + 2 * jitter * random());
  return Math.min(o.maxDelayMs ?? 30_000, Math.round(delay));
}

/** `Retry-After` (delta-seconds or HTTP-date) in ms, or undefined. */
export function parseRetryAfter(
  value: string | null | undefined,
  now = Date.now(),
): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/**
 * Allows a retry only while retries stay under `ratio` of the calls in the last `windowMs`
 * (plus a small floor so a quiet API can still retry at all).
 */
export class RetryBudget {
  #calls: number[] = [];
  #retries: number[] = [];

  constructor(
    readonly ratio = 0.2,
    readonly minRetries = 3,
    readonly windowMs = 10_000,
    readonly clock: Clock = systemClock,
  ) {}

  /** Counts a first attempt. */
  recordCall(): void {
    this.#calls.push(this.clock());
  }

  /** Takes one retry from the budget; false when it is spent. */
  tryRetry(): boolean {
    const since = this.clock() - this.windowMs;
    this.#calls = this.#calls.filter((t) => t > since);
    this.#retries = this.#retries.filter((t) => t > since);
    if (this.#retries.length >= Math.max(this.minRetries, this.ratio * this.#calls.length)) {
      return false;
    }
    this.#retries.push(this.clock());
    return true;
  }
}
