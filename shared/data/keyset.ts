/**
 * Keyset pages: the one way a list endpoint asks for `limit + 1` rows after a cursor, cuts
 * the page and encodes the `(key, id)` of its last row as the next cursor (see cursor.ts).
 *
 * @module
 */
import { decodeCursor, encodeCursor } from "./cursor.ts";

/** What a list pages by: its cursor tag and the format of its key. */
export interface Keyset {
  /** Names the list, so a cursor of one list is refused by another. */
  tag: string;
  /** Recognizer of the key as the database prints it (`keyFormats.*`). */
  key: RegExp;
}

/** What a page query needs: the page size, the rows to fetch and where to start. */
export interface PageArgs {
  /** Items per page. */
  limit: number;
  /** Rows to fetch: `limit + 1`, the extra one says whether more follow. */
  fetch: number;
  /** The decoded cursor, or null for the first page. */
  after: { key: string; id: string } | null;
}

/** A page as every list endpoint answers it. */
export interface KeysetPage<T> {
  items: T[];
  next_cursor: string | null;
}

/** Page arguments for `limit` items after `cursor`; a bad cursor is a 400 naming `cursor`. */
export function pageArgs(ks: Keyset, limit: number, cursor?: string): PageArgs {
  return { limit, fetch: limit + 1, after: cursor ? decodeCursor(cursor, ks.tag, ks.key) : null };
}

/** The first `p.limit` of the fetched rows (the page, before mapping). */
export function pageRows<R>(p: PageArgs, rows: readonly R[]): R[] {
  return rows.slice(0, p.limit);
}

/**
 * `p.fetch` rows in: the page's items mapped by `map`, and the cursor of its last row when
 * more rows follow.
 */
export function toPage<R extends { id: string; cursor_key: string }, T>(
  ks: Keyset,
  p: PageArgs,
  rows: readonly R[],
  map: (row: R) => T,
): KeysetPage<T> {
  const items = pageRows(p, rows);
  const last = items.at(-1);
  return {
    items: items.map(map),
    next_cursor: rows.length > p.limit && last
      ? encodeCursor(ks.tag, last.cursor_key, last.id)
      : null,
  };
}
