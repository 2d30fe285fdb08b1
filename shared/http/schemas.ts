/**
 * Input schemas every function shares, so the same value always reaches the same key.
 *
 * Ids are compared, cached and invalidated as strings (`profile:<id>`, `recall-thread:<id>`,
 * `id === user.id`), while Postgres compares uuids case-insensitively. An id accepted in any
 * other spelling than the canonical lowercase one would miss its cache entries and slip past
 * string checks, so ids are lowercased at validation: every key downstream is canonical.
 *
 * @module
 */
import { z } from "@hono/zod-openapi";

/**
 * A uuid in any case, normalized to lowercase. Accepts any 8-4-4-4-12 hex string (like
 * Postgres' `uuid` type), not only RFC 9562 versions, so every stored id validates.
 */
export const uuid = () => z.guid("must be a uuid").toLowerCase().openapi({ format: "uuid" });

/**
 * The C0 control characters that text we store or send on must not hold: NUL (which Postgres
 * `text` cannot hold at all) and the other controls except tab, line feed and carriage return.
 */
// deno-lint-ignore no-control-regex
const controlCharacters = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

/**
 * A string without control characters (see above) that is well-formed Unicode: a lone
 * surrogate (JSON `"\ud800"`) can't be encoded as UTF-8, so it would be stored silently as
 * U+FFFD. Refused at validation, before anything is paid for or written, with a 400 naming
 * the field.
 */
export const plainText = () =>
  z.string()
    .refine((s) => s.isWellFormed(), {
      message: "must be well-formed Unicode (no lone surrogate such as \ud800)",
      abort: true,
    })
    .refine((s) => !controlCharacters.test(s), {
      message: "must not contain control characters (such as a NUL byte)",
    });

/** Whether `text` holds a control character {@link plainText} refuses. */
export function hasControlCharacters(text: string): boolean {
  return controlCharacters.test(text);
}
