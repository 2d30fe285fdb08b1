/**
 * Postgres: one postgres.js pool per isolate, and the helper that runs user-facing work as
 * the calling user so row-level security applies exactly as it does behind PostgREST.
 *
 * The pool can't be starved by slow work: every transaction first takes a slot of the
 * database's {@link PoolGate} (one per pool connection), and that wait counts against the request budget
 * and is given up when the budget runs out or the client leaves, so a statement that never
 * started never runs. Searches take slots of their own lane, which may hold only some of the
 * connections: the rest always serve other work. A statement still running when its request
 * is abandoned is cancelled in the database.
 *
 * @module
 */
import postgres from "postgres";
import { outsideAdmission } from "../http/admission.ts";
import type { AuthUser } from "../auth/auth.ts";
import type { Budget } from "../http/budget.ts";
import type { Config } from "../config.ts";
import type { Sample } from "../http/metrics.ts";
import { ProblemError } from "../http/problem.ts";
import { countCall, timed } from "../http/timing.ts";

/** A transaction handle, as postgres.js passes to `begin`. */
export type Tx = postgres.TransactionSql;

/** Which share of the pool a transaction may use. */
export type Lane = "default" | "search";

/** Counts of one {@link Database} since it was made (exported in metrics). */
export interface PoolStats {
  /** Waits for a slot given up because the budget ran out or the client left. */
  abandonedWaits: number;
  /** Statements cancelled in the database because their request was abandoned. */
  cancelledStatements: number;
  /** Slots granted, and the milliseconds spent waiting for them, per lane. */
  granted: Record<Lane, number>;
  waitMs: Record<Lane, number>;
}

function newPoolStats(): PoolStats {
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

/**
 * Counts the statements `work` issues in the current request (Server-Timing `db` calls),
 * at the call site: a driver hook would run in whichever request freed the connection.
 * Each statement is also handed to `track`, so an abandoned request can cancel it, and
 * `guard` runs first (it throws when the request was abandoned).
 */
function counting(
  tx: Tx,
  track: (q: postgres.PendingQuery<postgres.Row[]>) => void,
  guard: () => void = () => {},
): Tx {
  return new Proxy(tx, {
    apply(target, self, args) {
      guard(); // throws once the request is abandoned: nothing more is sent
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

/** {@link Database.asUser}. */
function asUser<T>(
  db: Database,
  user: AuthUser | null,
  work: (tx: Tx) => Promise<T>,
  budget?: Budget,
  options: AsUserOptions = {},
): Promise<T> {
  const run = () => inTransaction(db, user, work, budget, options);
  if ((options.lane ?? "default") === "default") return run();
  // The search lane has bounds of its own: its time (the wait included) is recorded apart and
  // spent outside the request's admission slot, so it neither fills nor shrinks the
  // isolate's limit (see admission.ts, app.ts).
  return timed("searchLane", outsideAdmission(run), 0);
}

async function inTransaction<T>(
  db: Database,
  user: AuthUser | null,
  work: (tx: Tx) => Promise<T>,
  budget: Budget | undefined,
  options: AsUserOptions,
): Promise<T> {
  const signal = budget?.signal();
  const release = await timed("db", waitForSlot(db, options, signal), 0);
  try {
    const timeoutMs = Math.floor(
      Math.min(
        db.statementTimeoutMs,
        options.statementTimeoutMs ?? Infinity,
        budget?.remaining() ?? Infinity,
      ),
    );
    if (timeoutMs < 1 || signal?.aborted) {
      db.stats.abandonedWaits++;
      throw signal?.reason ?? new DOMException("request budget expired", "TimeoutError");
    }
    const cancels: Promise<unknown>[] = [];
    try {
      const run = transaction(db, user, work, timeoutMs, signal, budget, cancels);
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
async function waitForSlot(
  db: Database,
  options: AsUserOptions,
  signal?: AbortSignal,
): Promise<() => void> {
  const lane = options.lane ?? "default";
  const start = performance.now();
  const granted = (release: () => void) => {
    db.stats.granted[lane]++;
    db.stats.waitMs[lane] += performance.now() - start;
    return release;
  };
  if (options.maxWaitMs === undefined) return granted(await db.gate.acquire(lane, signal));
  const waited = AbortSignal.timeout(options.maxWaitMs);
  try {
    return granted(
      await db.gate.acquire(lane, signal ? AbortSignal.any([signal, waited]) : waited),
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

/** How long to wait for a CancelRequest to be delivered before giving up on it. */
const cancelLandMs = 5000;

/**
 * Sends a CancelRequest for `q` and resolves once it has landed: postgres.js resolves the
 * canceller's promise when the postmaster closes the cancel connection, which it does after
 * signalling the backend. `Query.cancel()` drops that promise, so the canceller is called here.
 */
function cancelAndWait(q: postgres.PendingQuery<postgres.Row[]>): Promise<unknown> {
  const pending = q as unknown as { canceller?: ((q: unknown) => Promise<void>) | null };
  const canceller = pending.canceller;
  if (!canceller) return Promise.resolve();
  pending.canceller = null; // as Query.cancel() does: one cancel per statement
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    canceller(q),
    new Promise((resolve) => (timer = setTimeout(resolve, cancelLandMs))),
  ]).finally(() => clearTimeout(timer));
}

/**
 * The transaction itself. Once the request's budget has expired or its client has left, it
 * never commits:
 * - a statement running then is cancelled (CancelRequest), whichever ended it first, the
 *   cancel or `statement_timeout` (kept as a backstop, set from what was left of the budget
 *   at the start, so a later statement could otherwise outlive the request);
 * - a statement issued after it throws instead of being sent;
 * - once `work` has settled, the deadline is checked again and the callback throws, so
 *   postgres.js sends ROLLBACK, not COMMIT.
 * ROLLBACK (or COMMIT) goes out only after every CancelRequest has landed: while the callback
 * runs, the connection is reserved for this transaction, so a late cancel can only hit a
 * statement of this (failed) transaction, never another request's.
 *
 * Remaining window: a deadline that falls while COMMIT itself is in flight (work finished in
 * time; one round trip, ~1 ms locally). The COMMIT is not cancelled (it may already be
 * durable), so the client can get 504 for a write that landed; likewise if the handler
 * spends past the deadline after `asUser` returned. Writes that a client may retry after a
 * 504 should carry an idempotency key.
 */
function transaction<T>(
  db: Database,
  user: AuthUser | null,
  work: (tx: Tx) => Promise<T>,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  budget: Budget | undefined,
  cancels: Promise<unknown>[],
): Promise<T> {
  const role = user ? "authenticated" : "anon";
  const claims = JSON.stringify(user ? user.claims : { role: "anon" });
  const expired = () => Boolean(signal?.aborted || (budget && budget.remaining() <= 0));
  const reason = () => signal?.reason ?? new DOMException("request budget expired", "TimeoutError");
  // Every tagged template of this transaction: statements, but also fragments nested in
  // other statements, which must never be awaited or cancelled here (that would run them).
  const issued = new Set<postgres.PendingQuery<postgres.Row[]>>();
  const onAbort = () => {
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
          db.stats.cancelledStatements++;
          // Both: the cancel delivered (so it can't hit a later statement) and the
          // statement's own end.
          await Promise.allSettled([cancelAndWait(q), q.then(() => {}, () => {})]);
        })().catch(() => {}),
      );
    }
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  return (db.sql.begin(async (tx) => {
    if (expired()) throw reason();
    const setup = tx`/* as-user */ select set_config('role', ${role}, true),
      set_config('request.jwt.claims', ${claims}, true),
      set_config('statement_timeout', ${String(timeoutMs)}, true)`.execute();
    issued.add(setup);
    const guarded = counting(tx, (q) => issued.add(q), () => {
      if (expired()) throw reason();
    });
    // allSettled: the callback must not return (and postgres.js end the transaction) while
    // a statement of `work` is still pending on this connection.
    const [setupDone, workDone] = await Promise.allSettled([
      setup,
      (async () => await work(guarded))(),
    ]);
    await Promise.allSettled(cancels);
    if (setupDone.status === "rejected") throw setupDone.reason;
    if (workDone.status === "rejected") throw workDone.reason;
    // Never commit after the deadline: the client is being (or has been) told 504.
    if (expired()) throw reason();
    return workDone.value;
  }) as Promise<T>).finally(() => signal?.removeEventListener("abort", onAbort));
}

/** {@link Database.query}. */
async function query<T extends readonly object[]>(
  db: Database,
  q: postgres.PendingQuery<T>,
  signal?: AbortSignal,
): Promise<T> {
  const release = await db.gate.acquire("default", signal);
  let cancelled: Promise<unknown> | undefined;
  const cancel = () => {
    db.stats.cancelledStatements++;
    cancelled = cancelAndWait(q as unknown as postgres.PendingQuery<postgres.Row[]>);
  };
  signal?.addEventListener("abort", cancel, { once: true });
  try {
    return await timed("db", q as unknown as Promise<T>);
  } finally {
    signal?.removeEventListener("abort", cancel);
    // Keep the slot until the CancelRequest has landed (it hits whatever its backend runs).
    if (cancelled) await cancelled;
    release();
  }
}

/** The database of one isolate: its pool, the gate in front of it, and a health connection. */
export class Database {
  /**
   * The pool. `prepare: false` because production goes through Supavisor's transaction
   * pooler, which can't keep prepared statements; a small `max` because there are many
   * isolates.
   */
  readonly sql: postgres.Sql;
  /**
   * A connection of its own for `/health`: a saturated pool is load, not an outage, so the
   * liveness check must not queue behind the work it reports on.
   */
  readonly healthSql: postgres.Sql;
  /** Counts since this database was made. */
  readonly stats: PoolStats = newPoolStats();
  /** One slot per pool connection; searches get at most `dbSearchSlots`. */
  readonly gate: PoolGate;
  /** `DB_STATEMENT_TIMEOUT_MS`: no statement runs longer. */
  readonly statementTimeoutMs: number;

  constructor(
    config: Pick<
      Config,
      "databaseUrl" | "dbPoolMax" | "dbStatementTimeoutMs" | "dbSearchSlots"
    >,
  ) {
    this.statementTimeoutMs = config.dbStatementTimeoutMs;
    this.sql = postgres(config.databaseUrl, {
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
    this.healthSql = postgres(config.databaseUrl, {
      prepare: false,
      max: 1,
      idle_timeout: 20,
      connect_timeout: 2,
      connection: { application_name: "rockout-edge-health", statement_timeout: 1500 },
      onnotice: () => {},
    });
    this.gate = new PoolGate(config.dbPoolMax, { search: config.dbSearchSlots }, this.stats);
  }

  /**
   * Runs `work` in one transaction as `user` (role `authenticated` with their JWT claims), or
   * as `anon` when `user` is null.
   *
   * - The wait for a connection counts against `budget` and is abandoned when it runs out or
   *   the client leaves (rejecting with the budget's reason): nothing is sent to the database.
   * - `statement_timeout` is what is left of the budget when the connection is ours (capped
   *   by `options.statementTimeoutMs` and `DB_STATEMENT_TIMEOUT_MS`).
   * - When the request is abandoned while a statement runs, the statement is cancelled
   *   (postgres.js sends a CancelRequest on a side connection) and the transaction rolls back.
   *
   * The setup statement is pipelined with the first query of `work`: no extra round trip.
   */
  asUser<T>(
    user: AuthUser | null,
    work: (tx: Tx) => Promise<T>,
    budget?: Budget,
    options: AsUserOptions = {},
  ): Promise<T> {
    return asUser(this, user, work, budget, options);
  }

  /**
   * A statement run with the function's own role (shared caches' misses, jobs), through the
   * same gate as {@link asUser}: postgres.js statements are lazy, so `q` is sent only once a
   * slot is ours, and the wait is abandoned (nothing sent) when `signal` aborts.
   */
  query<T extends readonly object[]>(
    q: postgres.PendingQuery<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    return query(this, q, signal);
  }

  /** Metric samples: slots in use and waiting, wait time, abandoned waits, cancels. */
  samples(): Sample[] {
    return [
      {
        name: "db_pool_slots_in_use",
        labels: { lane: "all" },
        value: this.gate.inUse.total,
        type: "gauge" as const,
        help: "Pool connections held by transactions of this isolate",
      },
      {
        name: "db_pool_slots_in_use",
        labels: { lane: "search" },
        value: this.gate.inUse.search,
        type: "gauge" as const,
        help: "Pool connections held by transactions of this isolate",
      },
      {
        name: "db_pool_waiting",
        labels: {},
        value: this.gate.waiting,
        type: "gauge" as const,
        help: "Transactions waiting for a pool connection",
      },
      ...(["default", "search"] as const).map((lane) => ({
        name: "db_pool_wait_ms_total",
        labels: { lane },
        value: Math.round(this.stats.waitMs[lane]),
        type: "counter" as const,
        help: "Milliseconds transactions waited for a pool connection (granted waits)",
      })),
      {
        name: "db_pool_abandoned_waits_total",
        labels: {},
        value: this.stats.abandonedWaits,
        type: "counter" as const,
        help: "Waits for a pool connection given up at the request's deadline (nothing ran)",
      },
      {
        name: "db_statements_cancelled_total",
        labels: {},
        value: this.stats.cancelledStatements,
        type: "counter" as const,
        help: "Statements cancelled in the database because their request was abandoned",
      },
    ];
  }

  /** Closes both pools (waiting for running statements up to `timeoutS`). */
  async close(timeoutS = 5): Promise<void> {
    await Promise.all([
      this.sql.end({ timeout: timeoutS }),
      this.healthSql.end({ timeout: timeoutS }),
    ]);
  }
}
