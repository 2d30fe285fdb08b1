/**
 * `digest`: a user's daily summary (new likes on their posts, new followers, new replies to
 * their posts, for one UTC day), delivered as one notification. Scheduled once per user per
 * day (`digest:<user>:<day>` is a unique job dedupe key) and idempotent when it runs twice
 * (`digest:<day>` is a unique notification key per user). Nothing happened → no notification.
 *
 * @module
 */
import { query, sql } from "../../../shared/db.ts";
import { type JobHandler, PermanentJobError } from "../../../shared/jobs/pool.ts";
import type { Db } from "../../../shared/jobs/queue.ts";

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
 * Enqueues one digest job per user who got any activity on `day` (UTC), in one statement.
 * Running it again for the same day adds nothing. Returns how many jobs were created.
 */
export async function scheduleDigests(day: string, db: Db = sql): Promise<number> {
  if (!isDay(day)) throw new Error(`not a day: ${day}`);
  const rows = await db`
    with window_ as (
      select (${day}::date::timestamp at time zone 'UTC') as from_,
             (${day}::date::timestamp at time zone 'UTC') + interval '1 day' as to_
    ), recipients as (
      select p.author_id as user_id
      from window_ w, public.likes l join public.posts p on p.id = l.post_id
      where l.created_at >= w.from_ and l.created_at < w.to_ and l.user_id <> p.author_id
      union
      select f.followee_id
      from window_ w, public.follows f
      where f.created_at >= w.from_ and f.created_at < w.to_
      union
      select p.author_id
      from window_ w, public.replies r join public.posts p on p.id = r.post_id
      where r.created_at >= w.from_ and r.created_at < w.to_
        and r.author_id is distinct from p.author_id
    )
    insert into public.jobs (job_type, payload, dedupe_key, max_attempts)
    select 'digest', jsonb_build_object('user_id', user_id, 'day', ${day}::text),
           'digest:' || user_id || ':' || ${day}::text, 3
    from recipients
    on conflict do nothing
    returning id`;
  return rows.length;
}

/** Sends the digest of `payload.user_id` for `payload.day`. */
export const sendDigest: JobHandler = async (job, { signal }) => {
  const { user_id: userId, day } = job.payload as { user_id?: string; day?: string };
  if (typeof userId !== "string" || typeof day !== "string" || !isDay(day)) {
    throw new PermanentJobError("digest needs payload {user_id, day: YYYY-MM-DD}");
  }
  // Through the isolate's pool gate (cancelled when the task times out).
  await query(
    sql`
    with window_ as (
      select (${day}::date::timestamp at time zone 'UTC') as from_,
             (${day}::date::timestamp at time zone 'UTC') + interval '1 day' as to_
    ), counts as (
      select
        (select count(*) from window_ w, public.posts p join public.likes l on l.post_id = p.id
          where p.author_id = ${userId} and l.user_id <> p.author_id
            and l.created_at >= w.from_ and l.created_at < w.to_)::int as new_likes,
        (select count(*) from window_ w, public.follows f
          where f.followee_id = ${userId}
            and f.created_at >= w.from_ and f.created_at < w.to_)::int as new_followers,
        (select count(*) from window_ w, public.posts p join public.replies r on r.post_id = p.id
          where p.author_id = ${userId} and r.author_id is distinct from p.author_id
            and r.created_at >= w.from_ and r.created_at < w.to_)::int as new_replies
    )
    insert into public.notifications (user_id, kind, payload, dedupe_key)
    select ${userId}::uuid, 'digest',
           jsonb_build_object('day', ${day}::text, 'new_likes', new_likes,
                              'new_followers', new_followers, 'new_replies', new_replies),
           'digest:' || ${day}::text
    from counts
    where new_likes + new_followers + new_replies > 0
      and exists (select 1 from public.profiles where id = ${userId})
    on conflict (user_id, dedupe_key) where dedupe_key is not null do nothing`,
    signal,
  );
};
