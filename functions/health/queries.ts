/**
 * `health`'s SQL: one named function per statement.
 *
 * @module
 */
import type postgres from "postgres";

/** The cheapest round trip, on `db` (health's own connection, outside the request pool). */
export const ping = (db: postgres.Sql): postgres.PendingQuery<postgres.Row[]> => db`select 1`;
