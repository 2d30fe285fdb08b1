/**
 * `feed`'s SQL: one named function per statement (RPC calls; the queries live in migrations).
 *
 * @module
 */
import type postgres from "postgres";
import type { Tx } from "../../shared/data/db.ts";
import type { PageArgs } from "../../shared/data/keyset.ts";

/** A feed row as the RPCs return it (`liked_by_me` only from `feed_following`). */
export type FeedRow = {
  id: string;
  body: string;
  media_url: string | null;
  thumbnail_url: string | null;
  like_count: number;
  reply_count: number;
  created_at: string | Date;
  author: { id: string; username: string; display_name: string | null; avatar_url: string | null };
  cursor_key: string;
  liked_by_me?: boolean;
};

/** A page of hot posts, the same for everyone. */
export const forYou = (tx: Tx, p: PageArgs): postgres.PendingQuery<FeedRow[]> =>
  tx<FeedRow[]>`select * from public.feed_for_you(
    ${p.fetch}, ${p.after?.key ?? null}::float8, ${p.after?.id ?? null}::uuid)`;

/** Of `ids`, those the caller likes. */
export const likedPostIds = (tx: Tx, ids: string[]): postgres.PendingQuery<{ id: string }[]> =>
  tx<{ id: string }[]>`select id from public.liked_post_ids(${ids}::uuid[]) as id`;

/** A page of the newest posts of the people the caller follows. */
export const following = (tx: Tx, p: PageArgs): postgres.PendingQuery<FeedRow[]> =>
  tx<FeedRow[]>`select * from public.feed_following(
    ${p.fetch}, ${p.after?.key ?? null}::text::timestamptz, ${p.after?.id ?? null}::uuid)`;
