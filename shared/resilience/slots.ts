/**
 * A keyed counting cap inside one isolate: at most `limit` holders per key, decided at once
 * whatever Redis does. Not the lease algorithm (shared/resilience/lease.ts): there is nothing to expire,
 * since a holder in this isolate always releases (in `finally`) or dies with the isolate.
 * Used for searches' per-isolate cap in front of their Redis leases (shared/data/search.ts).
 *
 * @module
 */
import {
  checkOptions,
  type LeaseOptions,
  type LeaseResult,
  type LeaseStore,
  makeLease,
} from "./lease.ts";

/** The Retry-After a full key suggests: holders here are short requests (searches). */
const retryAfterMs = 1000;

/** Holders per key in this isolate, as a {@link LeaseStore} for `concurrencyLimit`. */
export class KeyedSlots implements LeaseStore {
  readonly #held = new Map<string, number>();

  acquire(key: string, options: LeaseOptions): Promise<LeaseResult> {
    checkOptions(options);
    const held = this.#held.get(key) ?? 0;
    if (held >= options.limit) return Promise.resolve({ ok: false, retryAfterMs });
    this.#held.set(key, held + 1);
    const lease = makeLease(key, crypto.randomUUID(), Date.now() + options.ttlMs, () => {
      const left = (this.#held.get(key) ?? 1) - 1;
      if (left > 0) this.#held.set(key, left);
      else this.#held.delete(key);
      return Promise.resolve();
    });
    return Promise.resolve({ ok: true, lease });
  }

  /** Holders of `key` now. */
  held(key: string): number {
    return this.#held.get(key) ?? 0;
  }
}
