/**
 * The two request forms of a resolve: JSON `{thread_id?, text?}`, or `multipart/form-data`
 * with an `audio` file (≤ 8 MB; webm, mp4/m4a, mpeg, wav, ogg) and optional `thread_id` /
 * `text`. Oversized audio is refused from `Content-Length` before any of it is read; without
 * one, the app's body limit counts the stream and stops reading past it.
 *
 * @module
 */
import type { Context } from "hono";
import { z } from "zod";
import { invalidParameter, ProblemError } from "../../shared/problem.ts";
import { plainText, uuid } from "../../shared/schemas.ts";
import type { Audio } from "./providers.ts";
import { sha256Hex } from "./resolve.ts";

/** Largest audio upload. */
export const maxAudioBytes = 8 * 1024 * 1024;
/** Room for the multipart framing and the small fields around the audio. */
const multipartOverheadBytes = 64 * 1024;
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

/** The JSON body (also the multipart fields). */
export const ResolveJson = z.object({
  thread_id: uuid().optional(),
  // Control characters (a NUL byte) are refused here, before any provider is paid to read
  // text the database would refuse to store.
  text: plainText().trim().min(1, "must not be empty").max(
    maxTextChars,
    `must be at most ${maxTextChars} characters`,
  ).optional(),
});

/** A parsed resolve request. */
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

/** What kind of body this is, or a 415. */
export function bodyKind(c: Context): "json" | "multipart" {
  const type = (c.req.header("content-type") ?? "").split(";")[0].trim().toLowerCase();
  if (type === "application/json") return "json";
  if (type === "multipart/form-data") return "multipart";
  throw new ProblemError(
    415,
    "unsupported_media_type",
    "send application/json ({text}) or multipart/form-data (audio)",
  );
}

/**
 * The largest acceptable body of a request, by its type: the app reads bodies (before
 * admission) only up to this, so an oversized upload is refused at 413 while it streams.
 */
export function bodyLimitFor(c: Context): number {
  const type = (c.req.header("content-type") ?? "").split(";")[0].trim().toLowerCase();
  return type === "multipart/form-data" ? maxAudioBytes + multipartOverheadBytes : 64 * 1024;
}

/**
 * Route middleware, before anything reads the body: 415 for other content types, 413 for a
 * declared length that cannot hold an acceptable upload.
 */
export function guardBody() {
  return async (c: Context, next: () => Promise<void>) => {
    const kind = bodyKind(c);
    const declared = Number(c.req.header("content-length") ?? NaN);
    const max = kind === "json" ? 64 * 1024 : maxAudioBytes + multipartOverheadBytes;
    if (declared > max) throw tooLarge(kind);
    await next();
  };
}

function tooLarge(kind: "json" | "multipart"): ProblemError {
  return new ProblemError(
    413,
    "payload_too_large",
    kind === "json"
      ? "the JSON body is too large"
      : `audio must be at most ${maxAudioBytes / 1024 / 1024} MB`,
  );
}

/** Requires text or audio. */
function complete(request: ResolveRequest): ResolveRequest {
  if (!request.text && !request.audio) {
    throw new ProblemError(400, "invalid_parameter", "send text or audio", {
      extensions: { invalid_params: [{ name: "text", reason: "text or audio is required" }] },
    });
  }
  return request;
}

/** The JSON form, already validated by the route (whose raw text Hono keeps). */
export async function fromJson(
  c: Context,
  body: z.infer<typeof ResolveJson>,
): Promise<ResolveRequest> {
  const raw = await c.req.text();
  return complete({
    threadId: body.thread_id,
    text: body.text,
    fingerprint: await sha256Hex(`json\n${raw}`),
  });
}

/** Parses and validates the multipart form. */
export async function fromMultipart(c: Context): Promise<ResolveRequest> {
  let form: FormData;
  try {
    form = await c.req.raw.formData();
  } catch (err) {
    if (err instanceof ProblemError) throw err; // the body limit's 413
    throw new ProblemError(400, "malformed_body", "the multipart body cannot be parsed");
  }
  const field = (name: string) => {
    const value = form.get(name);
    if (value === null) return undefined;
    if (typeof value !== "string") throw invalidParameter(name, "must be a text field");
    return value;
  };
  const fields = ResolveJson.safeParse({ thread_id: field("thread_id"), text: field("text") });
  if (!fields.success) {
    const issue = fields.error.issues[0];
    throw invalidParameter(String(issue.path[0] ?? "body"), issue.message);
  }
  const file = form.get("audio");
  let audio: Audio | undefined;
  if (file !== null) {
    if (typeof file === "string") throw invalidParameter("audio", "must be a file");
    if (file.size > maxAudioBytes) throw tooLarge("multipart");
    if (file.size === 0) throw invalidParameter("audio", "is empty");
    const type = file.type.split(";")[0].trim().toLowerCase();
    const ext = audioTypes[type];
    if (!ext) {
      throw new ProblemError(
        415,
        "unsupported_media_type",
        `audio type "${type || "unknown"}" is not supported; send webm, mp4/m4a, mpeg, wav or ogg`,
      );
    }
    const bytes = new Uint8Array(await file.arrayBuffer());
    audio = { bytes, type, ext, sha256: await sha256Hex(bytes) };
  }
  const fingerprint = await sha256Hex(
    `form\n${JSON.stringify([field("thread_id"), field("text"), audio?.type, audio?.sha256])}`,
  );
  return complete({ threadId: fields.data.thread_id, text: fields.data.text, audio, fingerprint });
}
