/**
 * The slots in front of a Postgres pool: one per pool connection, of which a lane (searches)
 * may hold only some, so the rest always serve other work. A wait for a slot can be given up
 * (when the request's budget runs out or its client leaves), unlike postgres.js's own queue,
 * so a statement that never started never runs. Also the pool's counts ({@link PoolStats}).
 *
 * @module
 */

/** Which share of the pool a transaction may use. */
export type Lane = "default" | "search";

/** Counts of one database (`Database`, db.ts) since it was made (exported in metrics). */
export interface PoolStats {
  /** Waits for a slot given up because the budget ran out or the client left. */
  abandonedWaits: number;
  /** Statements cancelled in the database because their request was abandoned. */
  cancelledStatements: number;
  /** Slots granted, and the milliseconds spent waiting for them, per lane. */
  granted: Record<Lane, number>;
  waitMs: Record<Lane, number>;
}

/** Fresh {@link PoolStats}: every count zero. */
export function newPoolStats(): PoolStats {
  return {
    abandonedWaits: 0,
    cancelledStatements: 0,
    granted: { default: 0, search: 0 },
    waitMs: { default: 0, search: 0 },
  };
}

interface Waiter {
  lane: Lane;
  grant: () => void;
}

/**
 * Slots in front of the pool: `size` in all, of which lane `search` may hold `laneLimits.search`.
 * postgres.js queues a statement when every connection is taken and offers no way to take it
 * back, so we wait here instead, where a wait can be abandoned (FIFO, except that a waiter
 * whose lane is full lets others pass).
 */
export class PoolGate {
  readonly #inUse: Record<Lane, number> = { default: 0, search: 0 };
  readonly #waiters: Waiter[] = [];

  constructor(
    readonly size: number,
    readonly laneLimits: Partial<Record<Lane, number>> = {},
    readonly stats: PoolStats = newPoolStats(),
  ) {}

  /** Slots held now, in all and per lane. */
  get inUse(): { total: number; search: number } {
    return { total: this.#inUse.default + this.#inUse.search, search: this.#inUse.search };
  }

  /** Waiters queued now. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /**
   * Resolves with a release function once a slot of `lane` is free; rejects with the signal's
   * reason (and leaves the queue) when `signal` aborts first.
   */
  acquire(lane: Lane, signal?: AbortSignal): Promise<() => void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        this.stats.abandonedWaits++;
        return reject(signal.reason);
      }
      const grant = () => {
        signal?.removeEventListener("abort", onAbort);
        this.#inUse[lane]++;
        let released = false;
        resolve(() => {
          if (released) return;
          released = true;
          this.#inUse[lane]--;
          this.#dispatch();
        });
      };
      const waiter: Waiter = { lane, grant };
      const onAbort = () => {
        const i = this.#waiters.indexOf(waiter);
        if (i < 0) return;
        this.#waiters.splice(i, 1);
        this.stats.abandonedWaits++;
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(waiter);
      this.#dispatch();
    });
  }

  #free(lane: Lane): boolean {
    const total = this.#inUse.default + this.#inUse.search;
    return total < this.size && this.#inUse[lane] < (this.laneLimits[lane] ?? this.size);
  }

  #dispatch(): void {
    for (let i = 0; i < this.#waiters.length && this.inUse.total < this.size;) {
      const waiter = this.#waiters[i];
      if (this.#free(waiter.lane)) {
        this.#waiters.splice(i, 1);
        waiter.grant();
      } else i++;
    }
  }
}
