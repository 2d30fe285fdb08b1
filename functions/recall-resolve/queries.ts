/**
 * `recall-resolve`'s SQL: one named function per statement (the catalog search, the match and
 * the persisted exchange are RPCs in migrations).
 *
 * @module
 */
import type postgres from "postgres";
import type { Tx } from "../../shared/data/db.ts";

/** A song of our catalog found by `search_songs`, with how it matched. */
export interface CatalogRow {
  id: string;
  title: string;
  artist: string;
  album: string | null;
  year: number | null;
  score: number;
  matched: "title" | "full_text" | "trigram";
}

/** A catalog song's id, title and artist. */
export interface SongId {
  id: string;
  title: string;
  artist: string;
}

/** The caller's thread `id` (one row) unless it is deleted or not theirs. */
export const liveThread = (tx: Tx, id: string): postgres.PendingQuery<postgres.Row[]> =>
  tx`select 1 from public.recall_threads where id = ${id} and status <> 'deleted'`;

/** What one resolve persists: the question and the answer, in one statement. */
export interface Exchange {
  /** The caller's thread, or null to start one. */
  threadId: string | null;
  /** Title of a new thread. */
  title: string;
  userType: "audio" | "text";
  userContent: string;
  assistantType: "candidates" | "error";
  summary: string;
  /** The assistant message's `candidate_json`. */
  candidates: unknown;
}

/** Persists the exchange; no row when the thread was deleted meanwhile. */
export const insertExchange = (
  tx: Tx,
  e: Exchange,
): postgres.PendingQuery<{ thread_id: string; assistant_message_id: string }[]> =>
  tx<{ thread_id: string; assistant_message_id: string }[]>`
    select thread_id, assistant_message_id from public.insert_recall_messages_batch(
      ${e.threadId}::uuid, ${e.title}, ${e.userType}, ${e.userContent}, ${e.assistantType},
      ${e.summary},
      ${
    // deno-lint-ignore no-explicit-any
    tx.json(e.candidates as any)}::jsonb)`;

/** Up to 5 catalog songs matching `text`. */
export const searchSongs = (tx: Tx, text: string): postgres.PendingQuery<CatalogRow[]> =>
  tx<CatalogRow[]>`select * from public.search_songs(${text}, 5)`;

/** Catalog ids of the given songs (case-insensitive exact title and artist). */
export const matchSongs = (
  tx: Tx,
  songs: { title: string; artist: string }[],
): postgres.PendingQuery<SongId[]> =>
  tx<SongId[]>`select id, title, artist
    from public.match_songs(${songs.map((s) => s.title)}::text[], ${
    songs.map((s) => s.artist)
  }::text[])`;
