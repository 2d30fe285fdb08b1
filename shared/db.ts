/**
 * Postgres: one postgres.js pool per isolate, and the helper that runs user-facing work as
 * the calling user so row-level security applies exactly as it does behind PostgREST.
 *
 * The pool can't be starved by slow work: every transaction first takes a slot of
 * {@link poolGate} (one per pool connection), and that wait counts against the request budget
 * and is given up when the budget runs out or the client leaves, so a statement that never
 * started never runs. Searches take slots of their own lane, which may hold only some of the
 * connections: the rest always serve other work. A statement still running when its request
 * is abandoned is cancelled in the database.
 *
 * @module
 */
import postgres from "postgres";
import { outsideAdmission } from "./admission.ts";
import type { AuthUser } from "./auth.ts";
import type { Budget } from "./budget.ts";
import { config } from "./config.ts";
import { metrics, type Sample } from "./metrics.ts";
import { ProblemError } from "./problem.ts";
import { countCall, timed } from "./timing.ts";

/** A transaction handle, as postgres.js passes to `begin`. */
export type Tx = postgres.TransactionSql;

/**
 * The isolate's pool. `prepare: false` because production goes through Supavisor's
 * transaction pooler, which can't keep prepared statements; a small `max` because there are
 * many isolates.
 */
export const sql: postgres.Sql = postgres(config.databaseUrl, {
  prepare: false,
  max: config.dbPoolMax,
  idle_timeout: 20,
  connect_timeout: 5,
  connection: {
    application_name: "rockout-edge",
    statement_timeout: config.dbStatementTimeoutMs,
  },
  onnotice: () => {},
});

/**
 * A connection of its own for `/health`: a saturated pool is load, not an outage, so the
 * liveness check must not queue behind the work it reports on.
 */
export const healthSql: postgres.Sql = postgres(config.databaseUrl, {
  prepare: false,
  max: 1,
  idle_timeout: 20,
  connect_timeout: 2,
  connection: { application_name: "rockout-edge-health", statement_timeout: 1500 },
  onnotice: () => {},
});

/** Which share of the pool a transaction may use. */
export type Lane = "default" | "search";

/** Counts since the isolate started (exported in metrics). */
export const poolStats = {
  /** Waits for a slot given up because the budget ran out or the client left. */
  abandonedWaits: 0,
  /** Statements cancelled in the database because their request was abandoned. */
  cancelledStatements: 0,
  /** Slots granted, and the milliseconds spent waiting for them, per lane. */
  granted: { default: 0, search: 0 } as Record<Lane, number>,
  waitMs: { default: 0, search: 0 } as Record<Lane, number>,
};

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

  constructor(readonly size: number, readonly laneLimits: Partial<Record<Lane, number>> = {}) {}

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
        poolStats.abandonedWaits++;
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
        poolStats.abandonedWaits++;
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

/** The isolate's gate: one slot per pool connection; searches get at most `dbSearchSlots`. */
export const poolGate = new PoolGate(config.dbPoolMax, { search: config.dbSearchSlots });

/**
 * Counts the statements `work` issues in the current request (Server-Timing `db` calls),
 * at the call site: a driver hook would run in whichever request freed the connection.
 * Each statement is also handed to `track`, so an abandoned request can cancel it.
 */
function counting(tx: Tx, track: (q: postgres.PendingQuery<postgres.Row[]>) => void): Tx {
  return new Proxy(tx, {
    apply(target, self, args) {
      const result = Reflect.apply(target, self, args);
      if (Array.isArray(args[0]) && "raw" in args[0]) {
        countCall("db");
        track(result);
      }
      return result;
    },
  });
}

/** Options of {@link asUser}. */
export interface AsUserOptions {
  /** Caps `statement_timeout` below the default (e.g. searches: short by design). */
  statementTimeoutMs?: number;
  /** The pool share to use (default: `default`, which may use every connection). */
  lane?: Lane;
  /**
   * Waits at most this long for a connection (searches: as long as they may run), then
   * answers 503 with Retry-After instead of queueing for the rest of the budget.
   */
  maxWaitMs?: number;
}

/**
 * Runs `work` in one transaction as `user` (role `authenticated` with their JWT claims), or
 * as `anon` when `user` is null.
 *
 * - The wait for a connection counts against `budget` and is abandoned when it runs out or
 *   the client leaves (rejecting with the budget's reason): nothing is sent to the database.
 * - `statement_timeout` is what is left of the budget when the connection is ours (capped by
 *   `options.statementTimeoutMs` and `DB_STATEMENT_TIMEOUT_MS`).
 * - When the request is abandoned while a statement runs, the statement is cancelled
 *   (postgres.js sends a CancelRequest on a side connection) and the transaction rolls back.
 *
 * The setup statement is pipelined with the first query of `work`: no extra round trip.
 */
export function asUser<T>(
  user: AuthUser | null,
  work: (tx: Tx) => Promise<T>,
  budget?: Budget,
  options: AsUserOptions = {},
): Promise<T> {
  const run = () => inTransaction(user, work, budget, options);
  if ((options.lane ?? "default") === "default") return run();
  // The search lane has bounds of its own: its time (the wait included) is recorded apart and
  // spent outside the request's admission slot, so it neither fills nor shrinks the
  // isolate's limit (see admission.ts, http.ts).
  return timed("searchLane", outsideAdmission(run), 0);
}

async function inTransaction<T>(
  user: AuthUser | null,
  work: (tx: Tx) => Promise<T>,
  budget: Budget | undefined,
  options: AsUserOptions,
): Promise<T> {
  const signal = budget?.signal();
  const release = await timed("db", waitForSlot(options, signal), 0);
  try {
    const timeoutMs = Math.floor(
      Math.min(
        config.dbStatementTimeoutMs,
        options.statementTimeoutMs ?? Infinity,
        budget?.remaining() ?? Infinity,
      ),
    );
    if (timeoutMs < 1 || signal?.aborted) {
      poolStats.abandonedWaits++;
      throw signal?.reason ?? new DOMException("request budget expired", "TimeoutError");
    }
    const cancels: Promise<unknown>[] = [];
    try {
      const run = transaction(user, work, timeoutMs, signal, budget, cancels);
      return await timed("db", run, 0); // statements are counted one by one in `counting`
    } finally {
      // A CancelRequest hits whatever its backend runs when it lands: keep the slot until it
      // has, so it can't cancel a statement of the next request.
      await Promise.allSettled(cancels);
    }
  } finally {
    release();
  }
}

/** Takes a slot of `options.lane`, giving up when `signal` fires or after `maxWaitMs`. */
async function waitForSlot(options: AsUserOptions, signal?: AbortSignal): Promise<() => void> {
  const lane = options.lane ?? "default";
  const start = performance.now();
  const granted = (release: () => void) => {
    poolStats.granted[lane]++;
    poolStats.waitMs[lane] += performance.now() - start;
    return release;
  };
  if (options.maxWaitMs === undefined) return granted(await poolGate.acquire(lane, signal));
  const waited = AbortSignal.timeout(options.maxWaitMs);
  try {
    return granted(
      await poolGate.acquire(lane, signal ? AbortSignal.any([signal, waited]) : waited),
    );
  } catch (err) {
    if (!waited.aborted || signal?.aborted) throw err;
    throw new ProblemError(
      503,
      "unavailable",
      `the database is busy (no ${lane} connection within ${options.maxWaitMs} ms); retry shortly`,
      { headers: { "retry-after": "1" } },
    );
  }
}

function transaction<T>(
  user: AuthUser | null,
  work: (tx: Tx) => Promise<T>,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  budget: Budget | undefined,
  cancels: Promise<unknown>[],
): Promise<T> {
  const role = user ? "authenticated" : "anon";
  const claims = JSON.stringify(user ? user.claims : { role: "anon" });
  // Every tagged template of this transaction: statements, but also fragments nested in
  // other statements, which must never be awaited or cancelled here (that would run them).
  const issued = new Set<postgres.PendingQuery<postgres.Row[]>>();
  const onAbort = () => {
    // At the deadline itself, statement_timeout (set to what was left of the budget) ends
    // the statement in the database at the same moment; a CancelRequest racing it could
    // land on the backend's next statement. Cancel only earlier aborts: the client left.
    if (budget && budget.remaining() < 20) return;
    for (const q of issued) {
      // Sent to the backend (postgres.js sets `state` then; awaiting such a query can't
      // start it again) and not finished yet.
      if (!(q as unknown as { state?: unknown }).state) continue;
      cancels.push(
        (async () => {
          const done = await Promise.race([
            q.then(() => true, () => true),
            Promise.resolve().then(() => false),
          ]);
          if (done) return;
          poolStats.cancelledStatements++;
          q.cancel(); // returns nothing to await: the statement's own end says it landed
          await q.then(() => {}, () => {});
        })().catch(() => {}),
      );
    }
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  return (sql.begin(async (tx) => {
    const setup = tx`/* as-user */ select set_config('role', ${role}, true),
      set_config('request.jwt.claims', ${claims}, true),
      set_config('statement_timeout', ${String(timeoutMs)}, true)`.execute();
    issued.add(setup);
    const [, result] = await Promise.all([
      setup,
      work(counting(tx, (q) => issued.add(q))),
    ]);
    return result as T;
  }) as Promise<T>).finally(() => signal?.removeEventListener("abort", onAbort));
}

/**
 * A statement run with the function's own role (shared caches' misses), through the same
 * gate as {@link asUser}: postgres.js statements are lazy, so `q` is sent only once a slot
 * is ours, and the wait is abandoned (nothing sent) when `signal` aborts.
 */
export async function query<T extends readonly object[]>(
  q: postgres.PendingQuery<T>,
  signal?: AbortSignal,
): Promise<T> {
  const release = await poolGate.acquire("default", signal);
  const cancel = () => q.cancel();
  signal?.addEventListener("abort", cancel, { once: true });
  try {
    return await timed("db", q as unknown as Promise<T>);
  } finally {
    signal?.removeEventListener("abort", cancel);
    release();
  }
}

metrics.collect((): Sample[] => [
  {
    name: "db_pool_slots_in_use",
    labels: { lane: "all" },
    value: poolGate.inUse.total,
    type: "gauge" as const,
    help: "Pool connections held by transactions of this isolate",
  },
  {
    name: "db_pool_slots_in_use",
    labels: { lane: "search" },
    value: poolGate.inUse.search,
    type: "gauge" as const,
    help: "Pool connections held by transactions of this isolate",
  },
  {
    name: "db_pool_waiting",
    labels: {},
    value: poolGate.waiting,
    type: "gauge" as const,
    help: "Transactions waiting for a pool connection",
  },
  ...(["default", "search"] as const).map((lane) => ({
    name: "db_pool_wait_ms_total",
    labels: { lane },
    value: Math.round(poolStats.waitMs[lane]),
    type: "counter" as const,
    help: "Milliseconds transactions waited for a pool connection (granted waits)",
  })),
  {
    name: "db_pool_abandoned_waits_total",
    labels: {},
    value: poolStats.abandonedWaits,
    type: "counter" as const,
    help: "Waits for a pool connection given up at the request's deadline (nothing ran)",
  },
  {
    name: "db_statements_cancelled_total",
    labels: {},
    value: poolStats.cancelledStatements,
    type: "counter" as const,
    help: "Statements cancelled in the database because their request was abandoned",
  },
]);
