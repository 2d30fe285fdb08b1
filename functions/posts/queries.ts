/**
 * `posts`' SQL: one named function per statement (the thread read is
 * shared/domain/threads.ts, the likes an RPC in migrations).
 *
 * @module
 */
import type postgres from "postgres";
import type { Tx } from "../../shared/data/db.ts";

/** A post's like count and whether the caller likes it, after a batch. */
export interface LikeRow {
  id: string;
  like_count: number;
  liked_by_me: boolean;
}

/** Likes `like` and unlikes `unlike` as the caller, one RPC; rows only for visible posts. */
export const applyLikes = (
  tx: Tx,
  like: string[],
  unlike: string[],
): postgres.PendingQuery<LikeRow[]> =>
  tx<LikeRow[]>`
    select id, like_count, liked_by_me from public.apply_likes(${like}::uuid[], ${unlike}::uuid[])`;

/** Inserts the caller's post and returns it with its author (not liked yet). */
export const insertPost = (
  tx: Tx,
  args: {
    authorId: string;
    body: string;
    mediaUrl: string | null;
    thumbnailUrl: string | null;
  },
): postgres.PendingQuery<postgres.Row[]> =>
  tx`with p as (
      insert into public.posts (author_id, body, media_url, thumbnail_url)
      values (${args.authorId}, ${args.body}, ${args.mediaUrl}, ${args.thumbnailUrl})
      returning *
    )
    select p.*, false as liked_by_me,
      public.author_json(a) as author
    from p join public.profiles a on a.id = p.author_id`;

/** The post `id` with its author and whether the caller likes it, unless deleted. */
export const post = (tx: Tx, id: string): postgres.PendingQuery<postgres.Row[]> =>
  tx`select p.*,
      public.author_json(a) as author,
      exists (select 1 from public.likes l
              where l.user_id = (select auth.uid()) and l.post_id = p.id) as liked_by_me
    from public.posts p join public.profiles a on a.id = p.author_id
    where p.id = ${id} and p.status <> 'deleted'`;

/** Inserts the caller's reply to `postId` and returns it with its author. */
export const insertReply = (
  tx: Tx,
  args: { postId: string; authorId: string; body: string },
): postgres.PendingQuery<postgres.Row[]> =>
  tx`with r as (
      insert into public.replies (post_id, author_id, body)
      values (${args.postId}, ${args.authorId}, ${args.body})
      returning *
    )
    select r.id, r.post_id, r.persona_id, r.body, r.like_count, r.created_at,
      public.author_json(a) as author
    from r join public.profiles a on a.id = r.author_id`;
