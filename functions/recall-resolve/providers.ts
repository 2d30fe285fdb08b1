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
 * Each call returns proposals or throws; `resolve.ts` turns outcomes into statuses. The
 * {@link Providers} of an app are built once, in `createApp`, from its deps and settings.
 *
 * Breakers cost no round trip of their own on the usual path: a "closed" heard within
 * {@link breakerTrustMs} is trusted ({@link Providers.peek} refreshes it in the tick of the
 * resolve's first Redis command), and a call's success is held in the resolution's
 * `DeferredOutcomes`, sent with its last Redis command (shared/resilience/breaker.ts).
 *
 * @module
 */
import type { Budget } from "../../shared/http/budget.ts";
import type { Database } from "../../shared/data/db.ts";
import type { Deps } from "../../shared/deps.ts";
import { chatJson, type OpenAIApis, withClient } from "../../shared/providers/openai.ts";
import { type ACRCloudConfig, acrcloudIdentify } from "../../shared/providers/acrcloud.ts";
import type { RecognizedSong } from "../../shared/providers/recognition.ts";
import { type ShazamConfig, shazamDetect } from "../../shared/providers/shazam.ts";
import type { Search } from "../../shared/data/search.ts";
import type { DeferredOutcomes } from "../../shared/resilience/breaker.ts";
import { callUpstream, type Upstream, upstream } from "../../shared/resilience/upstream.ts";
import type { RecallResolveConfig } from "./config.ts";
import type { Proposal } from "./merge.ts";
import * as q from "./queries.ts";

/**
 * How long a breaker's "closed", as this isolate last heard it, lets a call through without
 * asking Redis: another isolate opening it meanwhile is noticed this much later at most (or at
 * this isolate's first failure, whose record answers "open").
 */
export const breakerTrustMs = 2000;

/** An uploaded recording. */
export interface Audio {
  bytes: Uint8Array;
  /** e.g. `audio/webm` (parameters dropped). */
  type: string;
  /** File extension matching `type` (the transcription API wants a name). */
  ext: string;
  sha256: string;
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

function recognized(source: string, songs: RecognizedSong[]): Proposal[] {
  return songs.map((s) => ({ ...s, confidence: s.score, source }));
}

/** The providers one app asks: the catalog, OpenAI, ACRCloud and Shazam. */
export class Providers {
  /** Which providers this app can ask (the catalog always). */
  readonly configured: { openai: boolean; acrcloud: boolean; shazam: boolean };
  readonly #db: Database;
  readonly #search: Search;
  readonly #openai: OpenAIApis;
  readonly #acrcloud: ACRCloudConfig | null;
  readonly #shazam: ShazamConfig | null;
  // One breaker per API (`openai-chat` guards both chat steps); each step its own timeout.
  readonly #apis: Record<
    "transcribe" | "intent" | "candidates" | "acrcloud" | "shazam",
    Upstream
  >;

  constructor(
    deps: Pick<Deps, "db" | "search" | "openai" | "breakers">,
    settings: Pick<RecallResolveConfig, "timeouts" | "acrcloud" | "shazam">,
  ) {
    const { timeouts } = settings;
    const { breakers } = deps;
    this.#db = deps.db;
    this.#search = deps.search;
    this.#openai = deps.openai;
    this.#acrcloud = settings.acrcloud;
    this.#shazam = settings.shazam;
    this.configured = {
      openai: deps.openai.models !== null,
      acrcloud: settings.acrcloud !== null,
      shazam: settings.shazam !== null,
    };
    this.#apis = {
      transcribe: upstream("openai-transcribe", {
        timeoutMs: timeouts.transcribeMs,
        breaker: breakers.get("openai-transcribe"),
        trustClosedMs: breakerTrustMs,
        retry: { attempts: 2, baseMs: 250 },
      }),
      intent: upstream("openai-chat", {
        timeoutMs: timeouts.intentMs,
        breaker: breakers.get("openai-chat"),
        trustClosedMs: breakerTrustMs,
        retry: { attempts: 2, baseMs: 250 },
      }),
      candidates: upstream("openai-chat", {
        timeoutMs: timeouts.candidatesMs,
        breaker: breakers.get("openai-chat"),
        trustClosedMs: breakerTrustMs,
        retry: false,
      }),
      acrcloud: upstream("acrcloud", {
        timeoutMs: timeouts.recognitionMs,
        breaker: breakers.get("acrcloud"),
        trustClosedMs: breakerTrustMs,
        retry: false,
      }),
      shazam: upstream("shazam", {
        timeoutMs: timeouts.recognitionMs,
        breaker: breakers.get("shazam"),
        trustClosedMs: breakerTrustMs,
        retry: false,
      }),
    };
  }

  /**
   * Refreshes the breakers a resolution of this input will ask (`audio`: transcription and
   * fingerprints too), where this isolate's "closed" is older than {@link breakerTrustMs}.
   * Call it in the tick of another Redis command: it shares that command's HTTP request.
   */
  peek(audio: boolean): void {
    const { openai, acrcloud, shazam } = this.configured;
    const apis = [
      openai && this.#apis.intent, // intent and candidates: one breaker, openai-chat
      audio && openai && this.#apis.transcribe,
      audio && acrcloud && this.#apis.acrcloud,
      audio && shazam && this.#apis.shazam,
    ];
    for (const api of apis) if (api) api.breaker.peek(api.trustClosedMs);
  }

  /**
   * Songs of our catalog matching `text`. Naming the title is conclusive (≥ 0.9); a lyrics or
   * keyword match is evidence (≤ 0.8: many songs share a line); a typo match is worth a bit
   * less than its similarity.
   */
  async searchCatalog(text: string, budget: Budget): Promise<Proposal[]> {
    const rows = await this.#db.asUser(
      null,
      (tx) => q.searchSongs(tx, text.slice(0, 500)),
      budget,
      // A search: bounded in SQL (8 words, capped candidates), short, in the search lane.
      this.#search.db,
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
  async matchCatalog(
    songs: { title: string; artist: string }[],
    budget: Budget,
  ): Promise<{ id: string; title: string; artist: string }[]> {
    if (!songs.length) return [];
    return await this.#db.asUser(null, (tx) => q.matchSongs(tx, songs), budget);
  }

  /** The transcript of `audio` ("" when the model heard no words). */
  async transcribe(audio: Audio, budget: Budget, deferred?: DeferredOutcomes): Promise<string> {
    const result = await callUpstream(
      this.#apis.transcribe,
      withClient(this.#openai, (client, signal) =>
        client.audio.transcriptions.create({
          file: new File([audio.bytes as Uint8Array<ArrayBuffer>], `recording.${audio.ext}`, {
            type: audio.type,
          }),
          model: this.#openai.models!.transcribe,
        }, { signal })),
      { budget, idempotent: true, deferred },
    );
    return (result.text ?? "").trim();
  }

  /** Intent analysis with the small model (structured output). */
  async analyzeIntent(text: string, budget: Budget, deferred?: DeferredOutcomes): Promise<Intent> {
    const { value } = await callUpstream(
      this.#apis.intent,
      withClient(this.#openai, (client, signal) =>
        chatJson<Intent>(client, {
          model: this.#openai.models!.small,
          system:
            "You help identify a song from what a user remembers. Extract, without guessing: a " +
            "lyrics fragment they quote, title and artist hints, a short description of the " +
            "sound or video, and the era. Use null for anything not stated.",
          user: text,
          schemaName: "recall_intent",
          schema: intentSchema,
          maxTokens: 300,
        }, signal)),
      { budget, idempotent: true, deferred },
    );
    return value;
  }

  /** Candidate songs from the large model, given the text and what the intent step found. */
  async generateCandidates(
    text: string,
    intent: Intent | null,
    budget: Budget,
    deferred?: DeferredOutcomes,
  ): Promise<Proposal[]> {
    const { value } = await callUpstream(
      this.#apis.candidates,
      withClient(
        this.#openai,
        (client, signal) =>
          chatJson<{ candidates: ModelCandidate[] }>(client, {
            model: this.#openai.models!.large,
            system:
              "Identify the song the user is trying to recall. Answer up to 5 real songs, most " +
              "likely first, each with a confidence between 0 and 1 and a one-sentence reason. " +
              "Answer an empty list rather than inventing songs.",
            user: JSON.stringify({ user_text: text, hints: intent }),
            schemaName: "recall_candidates",
            schema: candidatesSchema,
            maxTokens: 800,
          }, signal),
      ),
      { budget, deferred },
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

  /** ACRCloud's fingerprint match. */
  async identifyACRCloud(
    audio: Audio,
    budget: Budget,
    deferred?: DeferredOutcomes,
  ): Promise<Proposal[]> {
    const songs = await callUpstream(
      this.#apis.acrcloud,
      (signal) => acrcloudIdentify(this.#acrcloud!, audio.bytes, signal),
      { budget, deferred },
    );
    return recognized("acrcloud", songs);
  }

  /** Shazam's fingerprint match. */
  async detectShazam(
    audio: Audio,
    budget: Budget,
    deferred?: DeferredOutcomes,
  ): Promise<Proposal[]> {
    const songs = await callUpstream(
      this.#apis.shazam,
      (signal) => shazamDetect(this.#shazam!, audio.bytes, signal),
      { budget, deferred },
    );
    return recognized("shazam", songs);
  }
}
