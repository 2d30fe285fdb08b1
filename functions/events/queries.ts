/**
 * `events`' SQL: one named function per statement.
 *
 * @module
 */
import type postgres from "postgres";
import type { Tx } from "../../shared/data/db.ts";

/** One event of a batch, as stored. */
export type EventInput = {
  name: string;
  properties: Record<string, unknown>;
  occurred_at: string | null;
};

/** One statement, one parameter: the batch as JSON, expanded in the database. */
export const insertEvents = (
  tx: Tx,
  userId: string | null,
  anonymousId: string | null,
  rows: EventInput[],
): postgres.PendingQuery<postgres.Row[]> =>
  tx`insert into public.events (user_id, anonymous_id, name, properties, occurred_at)
        select ${userId}::uuid, ${anonymousId}, e.name,
               coalesce(e.properties, '{}'::jsonb), coalesce(e.occurred_at, now())
        from jsonb_to_recordset(${tx.json(rows as postgres.JSONValue)})
          as e(name text, properties jsonb, occurred_at timestamptz)`;
