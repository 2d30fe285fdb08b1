/**
 * What a resolve accepts, as the route's schemas (app.ts) and the order their answers come
 * in ({@link checkInOrder}). Headers: `Content-Type` (JSON or a multipart form, else 415)
 * and `Idempotency-Key`. Bodies: JSON `{thread_id?, text?}`, or `multipart/form-data` with
 * an `audio` file (≤ 8 MB; webm, mp4/m4a, mpeg, wav, ogg) and optional `thread_id` / `text`.
 * Text or audio is required.
 *
 * A failed check is a 400 naming the fields, unless the check carries a problem of its own
 * ({@link issueProblem}: 413 for audio too large, 415 for a type we don't take, the 400
 * "send text or audio").
 *
 * One limit is not here: the body's size. A schema sees a body only once it is read, so the
 * app's body limit ({@link bodyLimitFor}) refuses an oversized upload from `Content-Length`
 * before any of it is read, or while it streams (413).
 *
 * @module
 */
import type { Context } from "hono";
import { z } from "@hono/zod-openapi";
import { invalidParameter, ProblemError } from "../../shared/http/problem.ts";
import { plainText, uuid } from "../../shared/http/schemas.ts";
import { validIdempotencyKey } from "./idempotency.ts";
import type { Audio } from "./providers.ts";
import { sha256Hex } from "./resolve.ts";

/** Largest audio upload. */
export const maxAudioBytes = 8 * 1024 * 1024;
/** Room for the multipart framing and the small fields around the audio. */
const multipartOverheadBytes = 64 * 1024;
/** Largest JSON body. */
const maxJsonBytes = 64 * 1024;
/** Longest text. */
export const maxTextChars = 2000;

/** Accepted audio types → the file extension the transcription API expects. */
const audioTypes: Record<string, string> = {
  "audio/webm": "webm",
  "video/webm": "webm",
  "audio/mp4": "m4a",
  "audio/m4a": "m4a",
  "audio/x-m4a": "m4a",
  "video/mp4": "mp4",
  "audio/mpeg": "mp3",
  "audio/mp3": "mp3",
  "audio/wav": "wav",
  "audio/wave": "wav",
  "audio/x-wav": "wav",
  "audio/vnd.wave": "wav",
  "audio/ogg": "ogg",
  "application/ogg": "ogg",
};

/** The two body forms, by `Content-Type` (parameters dropped); null for any other. */
function bodyKind(contentType: unknown): "json" | "multipart" | null {
  const type = String(contentType ?? "").split(";")[0].trim().toLowerCase();
  if (type === "application/json") return "json";
  if (type === "multipart/form-data") return "multipart";
  return null;
}

/**
 * The largest acceptable body of a request, by its type: the app reads bodies (before
 * admission) only up to this, so an oversized upload is refused at 413 while it streams.
 * Not a schema check: a schema sees the body only once all of it has been read.
 */
export function bodyLimitFor(c: Context): number {
  return bodyKind(c.req.header("content-type")) === "multipart"
    ? maxAudioBytes + multipartOverheadBytes
    : maxJsonBytes;
}

/**
 * Fails the value being checked with `problem` as the answer (see {@link issueProblem}),
 * instead of the 400 every other failed check gets.
 */
function refuse(ctx: z.RefinementCtx, problem: ProblemError): never {
  ctx.addIssue({ code: "custom", message: problem.detail, params: { problem } });
  return z.NEVER;
}

/**
 * The problem a failed validation answers when its first issue carries one (413, 415); else
 * undefined, and the failure is the usual 400 naming every invalid field.
 */
export function issueProblem(issues: readonly unknown[]): ProblemError | undefined {
  const problem = (issues[0] as { params?: { problem?: unknown } } | undefined)?.params?.problem;
  return problem instanceof ProblemError ? problem : undefined;
}

/**
 * The headers: which body form this is (415 for any other `Content-Type`, checked first),
 * and the `Idempotency-Key`. A bad key is not failed here: its 400 comes after the JSON
 * body's own checks and before a form is parsed ({@link checkInOrder}), so it is kept as
 * `keyProblem`.
 */
export const ResolveHeaders = z.looseObject({
  "idempotency-key": z.string().optional().openapi({
    description: "Replays the first answer for 24 h (1–255 visible ASCII characters)",
    pattern: "^[\\x21-\\x7e]{1,255}$",
  }),
}).transform((headers, ctx) => {
  const kind = bodyKind(headers["content-type"]);
  if (!kind) {
    return refuse(
      ctx,
      new ProblemError(
        415,
        "unsupported_media_type",
        "send application/json ({text}) or multipart/form-data (audio)",
      ),
    );
  }
  const idempotencyKey = headers["idempotency-key"];
  const keyProblem = idempotencyKey !== undefined && !validIdempotencyKey(idempotencyKey)
    ? invalidParameter("Idempotency-Key", "must be 1–255 visible ASCII characters")
    : undefined;
  return { kind, idempotencyKey, keyProblem };
});

const ThreadId = uuid();
// Control characters (a NUL byte) are refused here, before any provider is paid to read
// text the database would refuse to store.
const Text = plainText().trim().min(1, "must not be empty").max(
  maxTextChars,
  `must be at most ${maxTextChars} characters`,
);

/** The 400 for a request with neither text nor audio. */
const textOrAudio = () =>
  new ProblemError(400, "invalid_parameter", "send text or audio", {
    extensions: { invalid_params: [{ name: "text", reason: "text or audio is required" }] },
  });

/**
 * Requires text or audio, once every field is valid (a bad field is named first): a
 * transform, which zod runs only when the fields passed.
 */
function complete<T extends { text?: string; audio?: Audio }>(
  body: T,
  ctx: z.RefinementCtx,
): T {
  return body.text === undefined && body.audio === undefined ? refuse(ctx, textOrAudio()) : body;
}

/** The JSON body. */
export const ResolveJson = z.object({
  thread_id: ThreadId.optional(),
  text: Text.optional(),
}).transform(complete);

/** A text field of the form (a file there is refused, naming the field). */
const textField = <T extends z.ZodType<unknown, string>>(schema: T) =>
  z.string("must be a text field").pipe(schema);

/**
 * The uploaded file, read: its bytes, type and hash. Checked in this order: a file, at most
 * 8 MB (413), not empty, a type we take (415); null once an issue is added.
 */
async function readAudio(file: unknown, ctx: z.RefinementCtx): Promise<Audio | null> {
  if (!(file instanceof File)) {
    ctx.addIssue({ code: "custom", path: ["audio"], message: "must be a file" });
    return null;
  }
  if (file.size > maxAudioBytes) {
    return refuse(
      ctx,
      new ProblemError(
        413,
        "payload_too_large",
        `audio must be at most ${maxAudioBytes / 1024 / 1024} MB`,
      ),
    );
  }
  if (file.size === 0) {
    ctx.addIssue({ code: "custom", path: ["audio"], message: "is empty" });
    return null;
  }
  const type = file.type.split(";")[0].trim().toLowerCase();
  const ext = audioTypes[type];
  if (!ext) {
    return refuse(
      ctx,
      new ProblemError(
        415,
        "unsupported_media_type",
        `audio type "${type || "unknown"}" is not supported; send webm, mp4/m4a, mpeg, wav or ogg`,
      ),
    );
  }
  const bytes = new Uint8Array(await file.arrayBuffer());
  return { bytes, type, ext, sha256: await sha256Hex(bytes) };
}

/** A form field sent twice counts once, as `FormData.get` reads it: the first. */
const firstValues = (form: unknown) =>
  typeof form === "object" && form !== null
    ? Object.fromEntries(
      Object.entries(form).map(([k, v]) => [k, Array.isArray(v) ? v[0] : v]),
    )
    : form;

/**
 * The multipart form: the audio, and the JSON body's fields as text fields. The text fields
 * are checked first (every bad one named in one 400); the audio only once they passed (its
 * 400, 413 or 415 alone), then text or audio is required.
 */
export const ResolveForm = z.preprocess(
  firstValues,
  z.object({
    // Documented as required: a form is how audio is sent (text alone goes as JSON), though
    // a form with text and no audio is taken.
    audio: z.unknown().optional().openapi({
      type: "string",
      format: "binary",
      description: "≤ 8 MB",
    }),
    thread_id: textField(ThreadId).optional().openapi({ format: "uuid" }),
    text: textField(Text).optional().openapi({ maxLength: maxTextChars }),
  }).openapi({ required: ["audio"] }).transform(async (form, ctx) => {
    const audio = form.audio === undefined ? undefined : await readAudio(form.audio, ctx);
    if (audio === null) return z.NEVER;
    return complete({ thread_id: form.thread_id, text: form.text, audio }, ctx);
  }),
);

/**
 * The route's validation hook, before the app's usual one (a 400 naming every invalid field):
 * gives the answers in the order they came in before the checks moved into the schemas, and
 * a check's own problem (413, 415, "send text or audio") when it carries one.
 *
 *   - headers: 415 for another `Content-Type`; then, for a form, a bad `Idempotency-Key` (400)
 *     and a body that cannot be parsed as multipart (400 `malformed_body`), both before
 *     the form's fields are looked at;
 *   - JSON: the body's own 400s (malformed, a bad field) first, then a bad `Idempotency-Key`,
 *     then "send text or audio";
 *   - form: the text fields, then the audio, then "send text or audio".
 */
export async function checkInOrder(result: ValidationResult, c: Context): Promise<void> {
  if (!result.success) {
    const problem = issueProblem(result.error.issues);
    if (result.target === "json" && problem) {
      // Only "send text or audio" carries one in JSON: the key is checked before it.
      const { keyProblem } = validHeaders(c);
      if (keyProblem) throw keyProblem;
    }
    if (problem) throw problem;
    return;
  }
  if (result.target === "header") {
    const headers = result.data as ValidHeaders;
    if (headers.kind === "multipart") {
      if (headers.keyProblem) throw headers.keyProblem;
      await parseForm(c);
    }
  } else if (result.target === "json") {
    const { keyProblem } = validHeaders(c);
    if (keyProblem) throw keyProblem;
  }
}

/** What a validation hook is given (the part {@link checkInOrder} reads). */
export type ValidationResult =
  | { success: true; target: string; data: unknown }
  | { success: false; target: string; error: { issues: readonly unknown[] } };

type ValidHeaders = z.infer<typeof ResolveHeaders>;

/** The headers as {@link ResolveHeaders} left them (validated before any body). */
const validHeaders = (c: Context) => c.req.valid("header" as never) as ValidHeaders;

/**
 * Parses the multipart body once, for the form's schema (Hono's validator takes the parsed
 * form from the request's body cache): a body that cannot be parsed (no boundary, garbage) is
 * a 400 with a detail of ours, not the parser's message.
 */
async function parseForm(c: Context): Promise<void> {
  let form: FormData;
  try {
    form = await c.req.formData();
  } catch (err) {
    if (err instanceof ProblemError) throw err; // the body limit's 408/413
    throw new ProblemError(400, "malformed_body", "the multipart body cannot be parsed");
  }
  c.req.bodyCache.formData = form; // as Hono's validator keeps it
}

/** A validated resolve request. */
export interface ResolveRequest {
  threadId?: string;
  text?: string;
  audio?: Audio;
  /**
   * SHA-256 (hex) of the request as sent, for `Idempotency-Key`: the raw JSON body, or for a
   * form the raw fields and the audio's bytes (not the framing: a client's retry picks a new
   * multipart boundary). Two requests that only normalize the same still differ here.
   */
  fingerprint: string;
}

/** The JSON request, validated by the route (whose raw text Hono keeps). */
export async function jsonRequest(
  c: Context,
  body: z.infer<typeof ResolveJson>,
): Promise<ResolveRequest> {
  return {
    threadId: body.thread_id,
    text: body.text,
    fingerprint: await sha256Hex(`json\n${await c.req.text()}`),
  };
}

/** The form request, validated by the route (whose parsed form Hono keeps). */
export async function formRequest(
  c: Context,
  // As typed for the route's form target (the JSON schema's fields also count there).
  form: { thread_id?: string; text?: string; audio?: Audio },
): Promise<ResolveRequest> {
  const raw = await c.req.formData();
  const field = (name: string) => (raw.get(name) ?? undefined) as string | undefined;
  const fingerprint = await sha256Hex(
    `form\n${
      JSON.stringify([field("thread_id"), field("text"), form.audio?.type, form.audio?.sha256])
    }`,
  );
  return { threadId: form.thread_id, text: form.text, audio: form.audio, fingerprint };
}
