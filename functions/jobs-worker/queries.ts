/**
 * `jobs-worker`'s SQL: one named function per statement of its handlers.
 *
 * @module
 */
import type postgres from "postgres";

/** What `generate_reply` needs to know about its post and persona. */
export interface ReplyTarget {
  post_body: string;
  post_status: string;
  persona_name: string;
  style_prompt: string;
  replied: boolean;
}

/**
 * One statement: a digest job per user who got any activity on `day` (UTC); running it again
 * for the same day adds nothing. Returns the created jobs' ids.
 */
export const scheduleDigests = (
  db: postgres.Sql,
  day: string,
): postgres.PendingQuery<{ id: string }[]> =>
  db<{ id: string }[]>`
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

/** One statement: `userId`'s digest notification for `day`, when anything happened. */
export const insertDigest = (
  db: postgres.Sql,
  userId: string,
  day: string,
): postgres.PendingQuery<postgres.Row[]> =>
  db`
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
    on conflict (user_id, dedupe_key) where dedupe_key is not null do nothing`;

/** The post, the persona, and whether the persona already replied to the post. */
export const replyTarget = (
  db: postgres.Sql,
  postId: string,
  personaId: string,
): postgres.PendingQuery<ReplyTarget[]> =>
  db<ReplyTarget[]>`
    select p.body as post_body, p.status as post_status, pe.name as persona_name,
           pe.style_prompt,
           exists (select 1 from public.replies r
                   where r.post_id = p.id and r.persona_id = pe.id) as replied
    from public.posts p, public.personas pe
    where p.id = ${postId} and pe.id = ${personaId}`;

/**
 * One statement: the persona's reply (once per persona per post) and, only when it was
 * inserted, the post author's notification.
 */
export const insertReply = (
  db: postgres.Sql,
  postId: string,
  personaId: string,
  personaName: string,
  body: string,
): postgres.PendingQuery<postgres.Row[]> =>
  db`
    with reply as (
      insert into public.replies (post_id, persona_id, body)
      values (${postId}, ${personaId}, ${body})
      on conflict (post_id, persona_id) where persona_id is not null do nothing
      returning id, post_id, persona_id
    )
    insert into public.notifications (user_id, kind, payload, dedupe_key)
    select p.author_id, 'persona_reply',
           jsonb_build_object('post_id', reply.post_id, 'reply_id', reply.id,
                              'persona_id', reply.persona_id, 'persona_name', ${personaName}::text),
           'persona_reply:' || reply.id
    from reply join public.posts p on p.id = reply.post_id
    on conflict (user_id, dedupe_key) where dedupe_key is not null do nothing`;
