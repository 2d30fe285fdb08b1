/**
 * `digest`: a user's daily summary (new likes on their posts, new followers, new replies to
 * their posts, for one UTC day), delivered as one notification. Scheduled once per user per
 * day (`digest:<user>:<day>` is a unique job dedupe key) and idempotent when it runs twice
 * (`digest:<day>` is a unique notification key per user). Nothing happened → no notification.
 *
 * @module
 */
import type { Database } from "../../../shared/data/db.ts";
import { type JobHandler, PermanentJobError } from "../../../shared/jobs/pool.ts";
import type { Db } from "../../../shared/jobs/queue.ts";
import * as q from "../queries.ts";

const dayPattern = /^\d{4}-\d{2}-\d{2}$/;

/** Is `day` a real calendar date `YYYY-MM-DD`? */
export function isDay(day: string): boolean {
  return dayPattern.test(day) && new Date(`${day}T00:00:00Z`).toISOString().startsWith(day);
}

/** Yesterday (UTC) as `YYYY-MM-DD`: the day a cron run just after midnight summarises. */
export function yesterday(now = new Date()): string {
  return new Date(now.getTime() - 86_400_000).toISOString().slice(0, 10);
}

/**
 * Enqueues one digest job per user who got any activity on `day` (UTC), in one statement
 * on `db` (`deps.db.sql`). Running it again for the same day adds nothing. Returns how many
 * jobs were created.
 */
export async function scheduleDigests(db: Db, day: string): Promise<number> {
  if (!isDay(day)) throw new Error(`not a day: ${day}`);
  const rows = await q.scheduleDigests(db, day);
  return rows.length;
}

/** The handler sending the digest of `payload.user_id` for `payload.day`, written to `db`. */
export function digestHandler(db: Database): JobHandler {
  return async (job, { signal }) => {
    const { user_id: userId, day } = job.payload as { user_id?: string; day?: string };
    if (typeof userId !== "string" || typeof day !== "string" || !isDay(day)) {
      throw new PermanentJobError("digest needs payload {user_id, day: YYYY-MM-DD}");
    }
    // Through the isolate's pool gate (cancelled when the task times out).
    await db.query(q.insertDigest(db.sql, userId, day), signal);
  };
}
