/**
 * `notifications`' SQL: one named function per statement.
 *
 * @module
 */
import type postgres from "postgres";
import type { Tx } from "../../shared/data/db.ts";
import type { PageArgs } from "../../shared/data/keyset.ts";

/** A notification row as the page query returns it. */
export interface NotificationRow {
  id: string;
  kind: string;
  payload: Record<string, unknown>;
  read_at: Date | null;
  created_at: Date;
  cursor_key: string;
}

/** One statement: a page of `userId`'s notifications (`p.fetch` rows) and the unread count. */
export const page = (
  tx: Tx,
  userId: string,
  p: PageArgs,
): postgres.PendingQuery<{ rows: NotificationRow[] | null; unread_count: number }[]> =>
  tx<{ rows: NotificationRow[] | null; unread_count: number }[]>`
      select
        (select json_agg(page order by page.created_at desc, page.id desc) from (
           select n.id, n.kind, n.payload, n.read_at, n.created_at, n.created_at::text as cursor_key
           from public.notifications n
           where n.user_id = ${userId}
             -- Scalar sub-selects (InitPlans): under RLS a bare coalesce is not leakproof
             -- and would demote the keyset from an index condition to a filter.
             and (n.created_at, n.id) < (
               (select coalesce(${p.after?.key ?? null}::text::timestamptz, 'infinity')),
               (select coalesce(${
    p.after?.id ?? null
  }::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff')))
           order by n.created_at desc, n.id desc
           limit ${p.fetch}
         ) page) as rows,
        (select count(*)::int from public.notifications n
          where n.user_id = ${userId} and n.read_at is null) as unread_count`;

/**
 * One statement: marks `ids` (or all, when `all`) of `userId`'s unread notifications read;
 * the count's snapshot predates the update, so it subtracts what it marked.
 */
export const markRead = (
  tx: Tx,
  userId: string,
  ids: string[],
  all: boolean,
): postgres.PendingQuery<{ updated: number; unread_count: number }[]> =>
  tx<{ updated: number; unread_count: number }[]>`
      with marked as (
        update public.notifications set read_at = now()
        where user_id = ${userId} and read_at is null
          and (${all} or id = any (${ids}::uuid[]))
        returning 1
      )
      select (select count(*)::int from marked) as updated,
             (select count(*)::int from public.notifications
               where user_id = ${userId} and read_at is null)
             - (select count(*)::int from marked) as unread_count`;
