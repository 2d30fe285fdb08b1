/**
 * The providers a resolution asks, each behind its circuit breaker and its own timeout
 * (capped by the request budget), with retries only where a repeat is harmless and cheap:
 *
 * - `catalog`: our songs table (full text, then trigram), always on.
 * - `transcription` (OpenAI, audio → text, 10 s, retried once) and `intent` (small model,
 *   10 s, retried once: hints about lyrics, title, artist, era).
 * - `candidates` (large model, 30 s, never retried: slow and the most expensive call).
 * - `acrcloud` and `shazam` (audio fingerprints, 10 s, never retried: each attempt is
 *   billed, and a miss only degrades the answer).
 *
 * Each call returns proposals or throws; `resolve.ts` turns outcomes into statuses.
 *
 * @module
 */
import type { Budget } from "../../shared/budget.ts";
import { config } from "../../shared/config.ts";
import { asUser } from "../../shared/db.ts";
import { chatJson, openai, openaiChat, openaiTranscribe } from "../../shared/openai.ts";
import { acrcloudIdentify } from "../../shared/providers/acrcloud.ts";
import type { RecognizedSong } from "../../shared/providers/recognition.ts";
import { shazamDetect } from "../../shared/providers/shazam.ts";
import { searchDb } from "../../shared/search.ts";
import { callUpstream, upstream } from "../../shared/upstream.ts";
import type { Proposal } from "./merge.ts";
import * as q from "./queries.ts";

// One breaker per API (`openai-chat` guards both chat steps); each step its own timeout.
const transcribeApi = upstream("openai-transcribe", {
  timeoutMs: config.recall.transcribeTimeoutMs,
  breaker: openaiTranscribe.breaker,
  retry: { attempts: 2, baseMs: 250 },
});
const intentApi = upstream("openai-chat", {
  timeoutMs: config.recall.intentTimeoutMs,
  breaker: openaiChat.breaker,
  retry: { attempts: 2, baseMs: 250 },
});
const candidatesApi = upstream("openai-chat", {
  timeoutMs: config.recall.candidatesTimeoutMs,
  breaker: openaiChat.breaker,
  retry: false,
});
const acrcloudApi = upstream("acrcloud", {
  timeoutMs: config.recall.recognitionTimeoutMs,
  retry: false,
});
const shazamApi = upstream("shazam", {
  timeoutMs: config.recall.recognitionTimeoutMs,
  retry: false,
});

/** Which providers this isolate can ask (the catalog always). */
export const configured = {
  openai: openai !== null,
  acrcloud: config.acrcloud !== null,
  shazam: config.shazam !== null,
};

/** An uploaded recording. */
export interface Audio {
  bytes: Uint8Array;
  /** e.g. `audio/webm` (parameters dropped). */
  type: string;
  /** File extension matching `type` (the transcription API wants a name). */
  ext: string;
  sha256: string;
}

/**
 * Songs of our catalog matching `text`. Naming the title is conclusive (≥ 0.9); a lyrics or
 * keyword match is evidence (≤ 0.8: many songs share a line); a typo match is worth a bit
 * less than its similarity.
 */
export async function searchCatalog(text: string, budget: Budget): Promise<Proposal[]> {
  const rows = await asUser(
    null,
    (tx) => q.searchSongs(tx, text.slice(0, 500)),
    budget,
    // A search: bounded in SQL (8 words, capped candidates), short, in the search lane.
    searchDb,
  );
  return rows.map((r) => ({
    title: r.title,
    artist: r.artist,
    album: r.album,
    year: r.year,
    song_id: r.id,
    source: "catalog",
    confidence: r.matched === "title"
      ? 0.9 + 0.05 * r.score
      : r.matched === "full_text"
      ? 0.55 + 0.25 * r.score
      : Math.min(0.8, 0.9 * r.score),
  }));
}

/** Catalog ids of the given songs (case-insensitive exact title and artist), one statement. */
export async function matchCatalog(
  songs: { title: string; artist: string }[],
  budget: Budget,
): Promise<{ id: string; title: string; artist: string }[]> {
  if (!songs.length) return [];
  return await asUser(
    null,
    (tx) => q.matchSongs(tx, songs),
    budget,
  );
}

/** The transcript of `audio` ("" when the model heard no words). */
export async function transcribe(audio: Audio, budget: Budget): Promise<string> {
  const client = openai!;
  const result = await callUpstream(
    transcribeApi,
    (signal) =>
      client.audio.transcriptions.create({
        file: new File([audio.bytes as Uint8Array<ArrayBuffer>], `recording.${audio.ext}`, {
          type: audio.type,
        }),
        model: config.openai!.transcribeModel,
      }, { signal }),
    { budget, idempotent: true },
  );
  return (result.text ?? "").trim();
}

/** What the small model reads in the user's words. */
export interface Intent {
  lyrics_fragment: string | null;
  title_hint: string | null;
  artist_hint: string | null;
  description: string | null;
  era: string | null;
}

const nullableString = { type: ["string", "null"] };
const intentSchema = {
  type: "object",
  additionalProperties: false,
  required: ["lyrics_fragment", "title_hint", "artist_hint", "description", "era"],
  properties: {
    lyrics_fragment: nullableString,
    title_hint: nullableString,
    artist_hint: nullableString,
    description: nullableString,
    era: nullableString,
  },
};

/** Intent analysis with the small model (structured output). */
export async function analyzeIntent(text: string, budget: Budget): Promise<Intent> {
  const { value } = await callUpstream(
    intentApi,
    (signal) =>
      chatJson<Intent>({
        model: config.openai!.smallModel,
        system:
          "You help identify a song from what a user remembers. Extract, without guessing: a " +
          "lyrics fragment they quote, title and artist hints, a short description of the " +
          "sound or video, and the era. Use null for anything not stated.",
        user: text,
        schemaName: "recall_intent",
        schema: intentSchema,
        maxTokens: 300,
      }, signal),
    { budget, idempotent: true },
  );
  return value;
}

interface ModelCandidate {
  title: string;
  artist: string;
  album: string | null;
  year: number | null;
  confidence: number;
  reason: string;
}

const candidatesSchema = {
  type: "object",
  additionalProperties: false,
  required: ["candidates"],
  properties: {
    candidates: {
      type: "array",
      items: {
        type: "object",
        additionalProperties: false,
        required: ["title", "artist", "album", "year", "confidence", "reason"],
        properties: {
          title: { type: "string" },
          artist: { type: "string" },
          album: nullableString,
          year: { type: ["integer", "null"] },
          confidence: { type: "number" },
          reason: { type: "string" },
        },
      },
    },
  },
};

/** Candidate songs from the large model, given the text and what the intent step found. */
export async function generateCandidates(
  text: string,
  intent: Intent | null,
  budget: Budget,
): Promise<Proposal[]> {
  const { value } = await callUpstream(
    candidatesApi,
    (signal) =>
      chatJson<{ candidates: ModelCandidate[] }>({
        model: config.openai!.largeModel,
        system: "Identify the song the user is trying to recall. Answer up to 5 real songs, most " +
          "likely first, each with a confidence between 0 and 1 and a one-sentence reason. " +
          "Answer an empty list rather than inventing songs.",
        user: JSON.stringify({ user_text: text, hints: intent }),
        schemaName: "recall_candidates",
        schema: candidatesSchema,
        maxTokens: 800,
      }, signal),
    { budget },
  );
  return (value.candidates ?? []).slice(0, 5).map((c) => ({
    title: String(c.title ?? ""),
    artist: String(c.artist ?? ""),
    album: c.album,
    year: Number.isInteger(c.year) ? c.year : null,
    confidence: Math.max(0, Math.min(1, Number(c.confidence) || 0)) * 0.9,
    reason: c.reason,
    source: "candidates",
  }));
}

function recognized(source: string, songs: RecognizedSong[]): Proposal[] {
  return songs.map((s) => ({ ...s, confidence: s.score, source }));
}

/** ACRCloud's fingerprint match. */
export async function identifyACRCloud(audio: Audio, budget: Budget): Promise<Proposal[]> {
  const songs = await callUpstream(
    acrcloudApi,
    (signal) => acrcloudIdentify(config.acrcloud!, audio.bytes, signal),
    { budget },
  );
  return recognized("acrcloud", songs);
}

/** Shazam's fingerprint match. */
export async function detectShazam(audio: Audio, budget: Budget): Promise<Proposal[]> {
  const songs = await callUpstream(
    shazamApi,
    (signal) => shazamDetect(config.shazam!, audio.bytes, signal),
    { budget },
  );
  return recognized("shazam", songs);
}
