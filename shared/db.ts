/**
 * Postgres: one postgres.js pool per isolate, and the helper that runs user-facing work as
 * the calling user so row-level security applies exactly as it does behind PostgREST.
 *
 * @module
 */
import postgres from "postgres";
import type { AuthUser } from "./auth.ts";
import type { Budget } from "./budget.ts";
import { config } from "./config.ts";
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
 * Counts the statements `work` issues in the current request (Server-Timing `db` calls),
 * at the call site: a driver hook would run in whichever request freed the connection.
 */
function counting(tx: Tx): Tx {
  return new Proxy(tx, {
    apply(target, self, args) {
      if (Array.isArray(args[0]) && "raw" in args[0]) countCall("db");
      return Reflect.apply(target, self, args);
    },
  });
}

/**
 * Runs `work` in one transaction as `user` (role `authenticated` with their JWT claims), or
 * as `anon` when `user` is null, with `statement_timeout` capped by the request budget so an
 * expired budget stops the query in the database too. The setup statement is pipelined with
 * the first query of `work`: no extra round trip.
 */
export function asUser<T>(
  user: AuthUser | null,
  work: (tx: Tx) => Promise<T>,
  budget?: Budget,
): Promise<T> {
  const role = user ? "authenticated" : "anon";
  const claims = JSON.stringify(user ? user.claims : { role: "anon" });
  const timeoutMs = Math.max(
    1,
    Math.floor(Math.min(config.dbStatementTimeoutMs, budget?.remaining() ?? Infinity)),
  );
  return timed(
    "db",
    sql.begin(async (tx) => {
      const setup = tx`/* as-user */ select set_config('role', ${role}, true),
        set_config('request.jwt.claims', ${claims}, true),
        set_config('statement_timeout', ${String(timeoutMs)}, true)`.execute();
      const [, result] = await Promise.all([setup, work(counting(tx))]);
      return result as T;
    }) as Promise<T>,
    0, // statements are counted one by one in `counting`
  );
}

/** A statement run with the function's own role (health checks, shared caches' misses). */
export function query<T extends readonly object[]>(q: postgres.PendingQuery<T>): Promise<T> {
  return timed("db", q as unknown as Promise<T>);
}
