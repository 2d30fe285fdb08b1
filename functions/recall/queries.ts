/**
 * `recall`'s SQL: one named function per statement (the pages are RPCs in migrations).
 *
 * @module
 */
import type postgres from "postgres";
import type { Tx } from "../../shared/data/db.ts";
import type { PageArgs } from "../../shared/data/keyset.ts";

/** A recall thread row. */
export interface ThreadRow {
  id: string;
  title: string;
  status: "active" | "archived";
  last_message_at: Date;
  created_at: Date;
  cursor_key: string;
}

/** A message row; `id` is null on the one row that says "the thread is yours but empty". */
export interface MessageRow {
  id: string | null;
  thread_id: string;
  role: "user" | "assistant";
  type: "text" | "audio" | "candidates" | "error";
  content: string;
  candidate_json: unknown;
  created_at: Date;
  cursor_key: string;
}

/** Soft-deletes the caller's thread `id`; no row when it is not theirs or already deleted. */
export const deleteThread = (tx: Tx, id: string): postgres.PendingQuery<postgres.Row[]> =>
  tx`update public.recall_threads set status = 'deleted'
           where id = ${id} and status <> 'deleted' returning id`;

/** A page of the caller's threads, most recently active first (`p.fetch` rows). */
export const threadsPage = (tx: Tx, p: PageArgs): postgres.PendingQuery<ThreadRow[]> =>
  tx<ThreadRow[]>`select * from public.get_recall_threads_paginated(${p.fetch},
        ${p.after?.key ?? null}::text::timestamptz, ${p.after?.id ?? null}::uuid)`;

/** The caller's thread `id`, unless deleted. */
export const thread = (tx: Tx, id: string): postgres.PendingQuery<ThreadRow[]> =>
  tx<ThreadRow[]>`select id, title, status, last_message_at, created_at
        from public.recall_threads where id = ${id} and status <> 'deleted'`;

/** A page of a thread's messages, newest first; no row when the thread is not the caller's. */
export const messagesPage = (
  tx: Tx,
  threadId: string,
  p: PageArgs,
): postgres.PendingQuery<MessageRow[]> =>
  tx<MessageRow[]>`select * from public.get_recall_messages_paginated(${threadId}::uuid,
        ${p.after?.key ?? null}::text::timestamptz, ${p.after?.id ?? null}::uuid, ${p.fetch})`;
