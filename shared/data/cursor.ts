/**
 * Opaque keyset cursors: base64url of the exact key values as the database printed them
 * (never JS Dates, which drop microseconds), tagged with what they page through so a cursor
 * from one list is refused by another.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { invalidParameter } from "../http/problem.ts";

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Recognizers for the key types we page by. */
export const keyFormats = {
  /** A timestamptz as Postgres prints it, e.g. `2026-11-25 10:00:00.123456+00`. */
  timestamptz: /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?[+-]\d{2}(:\d{2})?$/,
  /** A float8 as Postgres prints it (shortest exact form). */
  float8: /^-?(\d+(\.\d+)?(e[+-]?\d+)?|Infinity|NaN)$/,
  uuid,
};

/** Encodes `(key, id)` of the last row of a page, for the list `tag`. */
export function encodeCursor(tag: string, key: string, id: string): string {
  return Buffer.from(`${tag}\n${key}\n${id}`).toString("base64url");
}

/**
 * Decodes a cursor of the list `tag`; a malformed, foreign or tampered cursor is a 400
 * naming `cursor`.
 */
export function decodeCursor(
  cursor: string,
  tag: string,
  keyFormat: RegExp,
): { key: string; id: string } {
  const bad = () => invalidParameter("cursor", "not a cursor returned by this list");
  if (!/^[A-Za-z0-9_-]{1,400}$/.test(cursor)) throw bad();
  const parts = Buffer.from(cursor, "base64url").toString("utf8").split("\n");
  if (parts.length !== 3 || parts[0] !== tag) throw bad();
  const [, key, id] = parts;
  if (!keyFormat.test(key) || !uuid.test(id)) throw bad();
  return { key, id };
}
