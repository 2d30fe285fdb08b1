/**
 * What a resolve accepts, as the route's schemas (app.ts): the one place its input is
 * validated. Headers: `Content-Type` (JSON or a multipart form, else 415) and
 * `Idempotency-Key`. Bodies: JSON `{thread_id?, text?}`, or `multipart/form-data` with an
 * `audio` file (≤ 8 MB; webm, mp4/m4a, mpeg, wav, ogg) and optional `thread_id` / `text`.
 * Text or audio is required.
 *
 * A failed check is a 400 naming the field, unless the check carries a problem of its own
 * ({@link issueProblem}: 413 for audio too large, 415 for a type we don't take).
 *
 * One limit is not here: the body's size. A schema sees a body only once it is read, so the
 * app's body limit ({@link bodyLimitFor}) refuses an oversized upload from `Content-Length`
 * before any of it is read, or while it streams (413).
 *
 * @module
 */
import type { Context } from "hono";
import { z } from "@hono/zod-openapi";
import { ProblemError } from "../../shared/http/problem.ts";
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
 * The headers: which body form this is (415 for any other `Content-Type`, checked first), and
 * the `Idempotency-Key` (a bad one is refused before the body is read or anything is paid
 * for, naming the header as clients write it).
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
  if (idempotencyKey !== undefined && !validIdempotencyKey(idempotencyKey)) {
    ctx.addIssue({
      code: "custom",
      path: ["Idempotency-Key"],
      message: "must be 1–255 visible ASCII characters",
    });
    return z.NEVER;
  }
  return { kind, idempotencyKey };
});

const ThreadId = uuid();
// Control characters (a NUL byte) are refused here, before any provider is paid to read
// text the database would refuse to store.
const Text = plainText().trim().min(1, "must not be empty").max(
  maxTextChars,
  `must be at most ${maxTextChars} characters`,
);
const textOrAudio = { path: ["text"], message: "text or audio is required" };

/** The JSON body. */
export const ResolveJson = z.object({
  thread_id: ThreadId.optional(),
  text: Text.optional(),
}).refine((body) => body.text !== undefined, textOrAudio);

/** A text field of the form (a file there is refused, naming the field). */
const textField = <T extends z.ZodType<unknown, string>>(schema: T) =>
  z.string("must be a text field").pipe(schema);

/** The uploaded file, read: its bytes, type and hash. */
const AudioFile = z.unknown().transform(async (file, ctx): Promise<Audio> => {
  if (!(file instanceof File)) {
    ctx.addIssue({ code: "custom", message: "must be a file" });
    return z.NEVER;
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
    ctx.addIssue({ code: "custom", message: "is empty" });
    return z.NEVER;
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
}).openapi({ type: "string", format: "binary", description: "≤ 8 MB" });

/** A form field sent twice counts once, as `FormData.get` reads it: the first. */
const firstValues = (form: unknown) =>
  typeof form === "object" && form !== null
    ? Object.fromEntries(
      Object.entries(form).map(([k, v]) => [k, Array.isArray(v) ? v[0] : v]),
    )
    : form;

/** The multipart form: the audio, and the JSON body's fields as text fields. */
export const ResolveForm = z.preprocess(
  firstValues,
  z.object({
    // In this order: a bad field is named before anything is said about the audio.
    thread_id: textField(ThreadId).optional().openapi({ format: "uuid" }),
    text: textField(Text).optional().openapi({ maxLength: maxTextChars }),
    audio: AudioFile.optional(),
  }).refine((form) => form.text !== undefined || form.audio !== undefined, textOrAudio),
);

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
  form: z.infer<typeof ResolveForm>,
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
