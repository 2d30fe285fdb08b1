/**
 * ACRCloud's identify API (`POST https://<host>/v1/identify`): a multipart form with the
 * audio sample, signed with HMAC-SHA1 over
 * `POST\n/v1/identify\n<access_key>\naudio\n1\n<timestamp>` using the access secret.
 * Answers with `status.code` 0 (`metadata.music[]`), 1001 (no result) or an error code.
 *
 * @module
 */
import { encodeBase64 } from "./base64.ts";
import { readJson, RecognitionError, type RecognizedSong, yearOf } from "./recognition.ts";

/** Project credentials (`ACRCLOUD_HOST`, `ACRCLOUD_ACCESS_KEY`, `ACRCLOUD_ACCESS_SECRET`). */
export interface ACRCloudConfig {
  /** e.g. `identify-eu-west-1.acrcloud.com`, or a full `http(s)://` origin (tests). */
  host: string;
  accessKey: string;
  accessSecret: string;
}

/** The string ACRCloud signs (signature_version 1). */
export function acrcloudStringToSign(accessKey: string, timestamp: string): string {
  return ["POST", "/v1/identify", accessKey, "audio", "1", timestamp].join("\n");
}

/** Base64 HMAC-SHA1 of `text` with `secret`. */
export async function acrcloudSignature(secret: string, text: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-1" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(text));
  return encodeBase64(new Uint8Array(mac));
}

/** ACRCloud codes that mean "too many requests" (treated as HTTP 429). */
const quotaCodes = new Set([3003, 3015]);

interface ACRMusic {
  title?: string;
  artists?: { name?: string }[];
  album?: { name?: string };
  release_date?: string;
  score?: number;
}

/** Identifies `audio`; [] when ACRCloud heard nothing it knows. Throws {@link RecognitionError}. */
export async function acrcloudIdentify(
  config: ACRCloudConfig,
  audio: Uint8Array,
  signal: AbortSignal,
  now: () => number = Date.now,
): Promise<RecognizedSong[]> {
  const timestamp = String(Math.floor(now() / 1000));
  const signature = await acrcloudSignature(
    config.accessSecret,
    acrcloudStringToSign(config.accessKey, timestamp),
  );
  const form = new FormData();
  form.set("access_key", config.accessKey);
  form.set("data_type", "audio");
  form.set("signature_version", "1");
  form.set("signature", signature);
  form.set("timestamp", timestamp);
  form.set("sample_bytes", String(audio.byteLength));
  form.set("sample", new Blob([audio as Uint8Array<ArrayBuffer>]), "sample");
  const origin = /^https?:\/\//.test(config.host) ? config.host : `https://${config.host}`;
  const res = await fetch(new URL("/v1/identify", origin), { method: "POST", body: form, signal });
  const body = await readJson("acrcloud", res) as {
    status?: { code?: number; msg?: string };
    metadata?: { music?: ACRMusic[] };
  };
  const code = body?.status?.code;
  if (code === 1001) return [];
  if (code !== 0) {
    const status = quotaCodes.has(code ?? -1) ? 429 : typeof code === "number" ? 400 : 502;
    throw new RecognitionError("acrcloud", status, `code ${code}: ${body?.status?.msg ?? "?"}`);
  }
  return (body.metadata?.music ?? []).flatMap((m) => {
    const artist = (m.artists ?? []).map((a) => a.name).filter(Boolean).join(", ");
    if (!m.title || !artist) return [];
    const song: RecognizedSong = {
      title: m.title,
      artist,
      score: Math.max(0, Math.min(1, (m.score ?? 70) / 100)),
    };
    if (m.album?.name) song.album = m.album.name;
    const year = yearOf(m.release_date);
    if (year) song.year = year;
    return [song];
  });
}
