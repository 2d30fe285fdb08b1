/**
 * `profiles`' SQL: one named function per statement.
 *
 * @module
 */
import type postgres from "postgres";
import type { Tx } from "../../shared/data/db.ts";
import type { PageArgs } from "../../shared/data/keyset.ts";

type Rows = postgres.PendingQuery<postgres.Row[]>;

/** Profiles by name, best matches first (`prefixQuery`: the words as tsquery prefixes). */
export const searchProfiles = (
  tx: Tx,
  query: string,
  prefixQuery: string | null,
  limit: number,
): Rows =>
  tx`select id, username, display_name, avatar_url, follower_count
        from public.search_profiles(${query}, ${prefixQuery}, ${limit})`;

/** Applies `changes` to `userId`'s profile and returns it (no row: no profile). */
export const updateProfile = (tx: Tx, userId: string, changes: Record<string, unknown>): Rows =>
  tx`update public.profiles p set ${tx(changes)} where p.id = ${userId}
        returning p.id, p.username, p.display_name, p.avatar_url, p.bio, p.follower_count,
          p.following_count, p.created_at`;

/** Public profiles of `ids`, in any order (unknown ids left out). */
export const profilesByIds = (tx: Tx, ids: string[]): Rows =>
  tx`select p.id, p.username, p.display_name, p.avatar_url, p.bio, p.follower_count,
          p.following_count, p.created_at
        from public.profiles p where p.id = any(${ids}::uuid[])`;

/** A row of a follow page: `target` is the profile; the rest are null when it has none. */
export type FollowRow = {
  target: string;
  id: string | null;
  username: string;
  display_name: string | null;
  avatar_url: string | null;
  followed_at: Date;
  cursor_key: string;
};

/**
 * One statement: the profile `id` (no row when absent) and, laterally, one index range of
 * its followers or followees, newest first (`p.fetch` rows; `id` null when there are none).
 */
export const followPage = (
  tx: Tx,
  direction: "followers" | "following",
  id: string,
  p: PageArgs,
): postgres.PendingQuery<FollowRow[]> => {
  const key = p.after?.key ?? "infinity";
  const lastId = p.after?.id ?? "ffffffff-ffff-ffff-ffff-ffffffffffff";
  return direction === "followers"
    ? tx<FollowRow[]>`select t.id as target, e.* from public.profiles t
            left join lateral (
              select a.id, a.username, a.display_name, a.avatar_url, f.created_at as followed_at,
                     f.created_at::text as cursor_key
              from public.follows f join public.profiles a on a.id = f.follower_id
              where f.followee_id = t.id
                and (f.created_at, f.follower_id) < (${key}::text::timestamptz, ${lastId}::uuid)
              order by f.created_at desc, f.follower_id desc
              limit ${p.fetch}
            ) e on true
            where t.id = ${id}`
    : tx<FollowRow[]>`select t.id as target, e.* from public.profiles t
            left join lateral (
              select a.id, a.username, a.display_name, a.avatar_url, f.created_at as followed_at,
                     f.created_at::text as cursor_key
              from public.follows f join public.profiles a on a.id = f.followee_id
              where f.follower_id = t.id
                and (f.created_at, f.followee_id) < (${key}::text::timestamptz, ${lastId}::uuid)
              order by f.created_at desc, f.followee_id desc
              limit ${p.fetch}
            ) e on true
            where t.id = ${id}`;
};

/** Follows (`follow`) or unfollows `id` as the caller; no row when `id` has no profile. */
export const setFollow = (tx: Tx, id: string, follow: boolean): Rows =>
  tx`select follower_count from public.set_follow(${id}, ${follow})`;
