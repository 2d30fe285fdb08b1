/**
 * Shazam song detection through RapidAPI (`POST {SHAZAM_BASE_URL}/songs/v2/detect`): the body
 * is the audio as base64 text, the key goes in `X-RapidAPI-Key`. A match has `track` (`title`,
 * `subtitle` = artist, album and year in `sections[].metadata`); no match has none.
 *
 * @module
 */
import { encodeBase64 } from "./base64.ts";
import { readJson, RecognitionError, type RecognizedSong, yearOf } from "./recognition.ts";

/** Project credentials (`SHAZAM_API_KEY`, `SHAZAM_BASE_URL`). */
export interface ShazamConfig {
  apiKey: string;
  baseUrl: string;
}

interface ShazamTrack {
  title?: string;
  subtitle?: string;
  sections?: { metadata?: { title?: string; text?: string }[] }[];
}

/** Detects the song in `audio`; [] when Shazam found none. Throws {@link RecognitionError}. */
export async function shazamDetect(
  config: ShazamConfig,
  audio: Uint8Array,
  signal: AbortSignal,
): Promise<RecognizedSong[]> {
  const base = config.baseUrl.replace(/\/+$/, "");
  const res = await fetch(`${base}/songs/v2/detect?timezone=UTC&locale=en-US`, {
    method: "POST",
    headers: {
      "content-type": "text/plain",
      "x-rapidapi-key": config.apiKey,
      "x-rapidapi-host": new URL(base).host,
    },
    body: encodeBase64(audio),
    signal,
  });
  const body = await readJson("shazam", res) as { track?: ShazamTrack; matches?: unknown[] };
  if (body === null || typeof body !== "object") {
    throw new RecognitionError("shazam", 502, "unexpected answer");
  }
  const track = body.track;
  if (!track) return [];
  if (!track.title || !track.subtitle) {
    throw new RecognitionError("shazam", 502, "a track without title or artist");
  }
  const meta = (track.sections ?? []).flatMap((s) => s.metadata ?? []);
  const song: RecognizedSong = { title: track.title, artist: track.subtitle, score: 0.9 };
  const album = meta.find((m) => m.title === "Album")?.text;
  if (album) song.album = album;
  const year = yearOf(meta.find((m) => m.title === "Released")?.text);
  if (year) song.year = year;
  return [song];
}
