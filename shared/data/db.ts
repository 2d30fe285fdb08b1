/**
 * Postgres: one postgres.js pool per isolate, and the helper that runs user-facing work as
 * the calling user so row-level security applies exactly as it does behind PostgREST.
 *
 * The pool can't be starved by slow work: every transaction first takes a slot of the
 * database's {@link PoolGate} (one per pool connection), and that wait counts against the request budget
 * and is given up when the budget runs out or the client leaves, so a statement that never
 * started never runs. Searches take slots of their own lane, which may hold only some of the
 * connections: the rest always serve other work. A statement still running when its request
 * is abandoned is cancelled in the database. The gate is in pool_gate.ts; the transaction and
 * cancel mechanics are in transaction.ts.
 *
 * @module
 */
import postgres from "postgres";
import type { AuthUser } from "../auth/auth.ts";
import type { Budget } from "../http/budget.ts";
import type { Config } from "../config.ts";
import type { Sample } from "../http/metrics.ts";
import { newPoolStats, PoolGate, type PoolStats } from "./pool_gate.ts";
import { asUser, type AsUserOptions, query, type Tx } from "./transaction.ts";

export type { AsUserOptions, Tx } from "./transaction.ts";

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
