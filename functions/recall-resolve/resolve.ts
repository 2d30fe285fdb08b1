/**
 * One resolution: which providers to ask for a normalized input, in what order, and what
 * their answers add up to. Independent providers run in parallel (fingerprints alongside
 * transcription → catalog + intent); the large model runs only when those were not
 * conclusive. A provider that fails, times out or has an open circuit is reported as such
 * and the others' answer comes back `degraded`: never an exception.
 *
 * The result depends only on the input (never on who asks), so it can be shared between
 * users and kept for a while.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Budget } from "../../shared/http/budget.ts";
import type { DeferredOutcomes } from "../../shared/resilience/breaker.ts";
import { metrics } from "../../shared/http/metrics.ts";
import { upstreamFailure } from "../../shared/resilience/upstream.ts";
import { type Candidate, mergeCandidates, type Proposal, songKey } from "./merge.ts";
import type { Audio, Intent, Providers } from "./providers.ts";

/** How one provider's part of a resolution ended. */
export type ProviderStatus =
  | "ok"
  | "no_match"
  | "timeout"
  | "error"
  | "circuit_open"
  | "not_configured";

/** What the user asked, normalized: equal inputs resolve to the same answer. */
export interface ResolveInput {
  /** Normalized text (may be empty for audio alone). */
  text: string;
  audio?: Audio;
  /** SHA-256 (hex) over the normalized text and the audio's hash: the sharing key. */
  key: string;
}

/** A resolution (JSON: it is cached and crosses isolates). */
export interface Resolution {
  candidates: Candidate[];
  providers: Record<string, ProviderStatus>;
  degraded: boolean;
  /** What the transcription heard, for the user's message. */
  transcript?: string;
}

/** From this confidence on, the cheap steps are conclusive: the large model is not asked. */
export const conclusiveConfidence = 0.85;

/** Lowercase, Unicode-normalized, punctuation to single spaces, trimmed. */
export function normalizeText(text: string): string {
  return text.normalize("NFKC").toLowerCase().replace(/[^\p{L}\p{N}']+/gu, " ").trim();
}

/** Hex SHA-256 of `data`. */
export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Buffer.from(digest).toString("hex");
}

/** The input as resolutions see it: normalized text, audio hash, and the sharing key. */
export async function resolveInput(text: string | undefined, audio?: Audio): Promise<ResolveInput> {
  const normalized = normalizeText(text ?? "");
  const key = await sha256Hex(`v1\ntext:${normalized}\naudio:${audio?.sha256 ?? ""}`);
  return { text: normalized, audio, key };
}

/** Records each provider's outcome (status map + metrics) around its call. */
class Outcomes {
  readonly providers: Record<string, ProviderStatus> = {};

  /** Runs `call`; null when it failed (its status says how). */
  async run<T>(
    name: string,
    available: boolean,
    call: () => Promise<T>,
    matched: (value: T) => boolean,
  ): Promise<T | null> {
    if (!available) {
      this.set(name, "not_configured");
      return null;
    }
    try {
      const value = await call();
      this.set(name, matched(value) ? "ok" : "no_match");
      return value;
    } catch (err) {
      this.set(name, upstreamFailure(err));
      return null;
    }
  }

  set(name: string, status: ProviderStatus): void {
    // A provider asked twice (catalog: text, then hints) is as good as its best answer.
    const rank = ["ok", "no_match", "not_configured", "circuit_open", "timeout", "error"];
    const previous = this.providers[name];
    if (previous && rank.indexOf(previous) <= rank.indexOf(status)) return;
    this.providers[name] = status;
  }

  get degraded(): boolean {
    return Object.values(this.providers).some((s) =>
      s === "timeout" || s === "error" || s === "circuit_open"
    );
  }
}

const found = (p: Proposal[]) => p.length > 0;

/**
 * Asks `providers` about `input` within `budget` and merges their answers. With `deferred`, the
 * providers' successes are held there for their breakers (the caller flushes it).
 */
export async function resolve(
  providers: Providers,
  input: ResolveInput,
  budget: Budget,
  deferred?: DeferredOutcomes,
): Promise<Resolution> {
  const { configured } = providers;
  const outcomes = new Outcomes();
  const proposals: Proposal[] = [];
  const add = (p: Proposal[] | null) => p && proposals.push(...p);
  let transcript: string | undefined;
  let intent: Intent | null = null;
  let text = input.text;

  const fingerprints = input.audio
    ? [
      outcomes.run("acrcloud", configured.acrcloud, () =>
        providers.identifyACRCloud(input.audio!, budget, deferred), found)
        .then(add),
      outcomes.run("shazam", configured.shazam, () =>
        providers.detectShazam(input.audio!, budget, deferred), found)
        .then(add),
    ]
    : [];

  const words = (async () => {
    if (input.audio) {
      const heard = await outcomes.run(
        "transcription",
        configured.openai,
        () => providers.transcribe(input.audio!, budget, deferred),
        (t) => t.length > 0,
      );
      if (heard) {
        transcript = heard;
        text = [input.text, normalizeText(heard)].filter(Boolean).join(" ");
      }
    }
    if (!text) return;
    const [catalog, hints] = await Promise.all([
      outcomes.run("catalog", true, () => providers.searchCatalog(text, budget), found),
      outcomes.run(
        "intent",
        configured.openai,
        () => providers.analyzeIntent(text, budget, deferred),
        (i) => Object.values(i).some((v) => v),
      ),
    ]);
    add(catalog);
    intent = hints;
    // The hints may name what the raw words did not: ask the catalog again with them.
    const queries = [
      [intent?.title_hint, intent?.artist_hint].filter(Boolean).join(" "),
      intent?.lyrics_fragment ?? "",
    ].map(normalizeText).filter((q) => q && q !== text);
    if (queries.length && !conclusive(proposals)) {
      const more = await Promise.all(
        queries.map((q) =>
          outcomes.run("catalog", true, () => providers.searchCatalog(q, budget), found)
        ),
      );
      more.forEach(add);
    }
  })();

  await Promise.all([...fingerprints, words]);

  if (text && !conclusive(proposals)) {
    add(
      await outcomes.run(
        "candidates",
        configured.openai,
        () => providers.generateCandidates(text, intent, budget, deferred),
        found,
      ),
    );
  }

  await attachSongIds(providers, proposals, outcomes, budget);
  for (const [provider, status] of Object.entries(outcomes.providers)) {
    metrics.inc("recall_provider_outcomes_total", { provider, status });
  }
  const resolution: Resolution = {
    candidates: mergeCandidates(proposals),
    providers: outcomes.providers,
    degraded: outcomes.degraded,
  };
  if (transcript) resolution.transcript = transcript;
  return resolution;
}

function conclusive(proposals: Proposal[]): boolean {
  return mergeCandidates(proposals).some((c) => c.confidence >= conclusiveConfidence);
}

/**
 * Gives other providers' proposals the catalog's id (and spelling) of the same song, in one
 * statement. A failure here only leaves ids out.
 */
async function attachSongIds(
  providers: Providers,
  proposals: Proposal[],
  outcomes: Outcomes,
  budget: Budget,
): Promise<void> {
  const known = new Map(
    proposals.filter((p) => p.song_id).map((p) => [songKey(p.title, p.artist), p.song_id!]),
  );
  const missing = proposals.filter((p) => !p.song_id && !known.has(songKey(p.title, p.artist)));
  if (!missing.length) return;
  try {
    for (const row of await providers.matchCatalog(missing, budget)) {
      known.set(songKey(row.title, row.artist), row.id);
    }
  } catch (err) {
    outcomes.set("catalog", upstreamFailure(err));
    return;
  }
  for (const p of proposals) p.song_id ??= known.get(songKey(p.title, p.artist));
}
