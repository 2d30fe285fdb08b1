/**
 * `recall-resolve`'s own settings, read from the environment at app creation.
 *
 * @module
 */
import { z } from "zod";
import { type Env, int, section } from "../../shared/config.ts";
import type { ACRCloudConfig } from "../../shared/providers/acrcloud.ts";
import type { ShazamConfig } from "../../shared/providers/shazam.ts";

/** `recall-resolve`'s settings. */
export type RecallResolveConfig = ReturnType<typeof recallResolveConfig>;

/** Parses `recall-resolve`'s settings out of `env`. Throws an Error naming every bad variable. */
export function recallResolveConfig(env: Env) {
  const e = section(env, {
    /** Resolves per user per minute (fail closed: every resolve may cost money). */
    RECALL_RATE_LIMIT_PER_MIN: int(10),
    /** Resolves per user per hour. */
    RECALL_RATE_LIMIT_PER_HOUR: int(100),
    /** Resolutions a user may have computing at once (every isolate). */
    RECALL_CONCURRENCY: int(5),
    /** Per provider call (each also capped by what is left of the request budget). */
    RECALL_TRANSCRIBE_TIMEOUT_MS: int(10_000),
    RECALL_INTENT_TIMEOUT_MS: int(10_000),
    RECALL_CANDIDATES_TIMEOUT_MS: int(30_000),
    /** ACRCloud identify and Shazam detect. */
    RECALL_RECOGNITION_TIMEOUT_MS: int(10_000),
    /** How long a complete (not degraded) provider answer is reused for identical input. */
    RECALL_ANSWER_TTL_S: int(300),
    /** ACRCloud's project: asked only when all three are set. */
    ACRCLOUD_HOST: z.string().min(1).optional(),
    ACRCLOUD_ACCESS_KEY: z.string().min(1).optional(),
    ACRCLOUD_ACCESS_SECRET: z.string().min(1).optional(),
    /** Shazam through RapidAPI: asked only when the key is set. */
    SHAZAM_API_KEY: z.string().min(1).optional(),
    SHAZAM_BASE_URL: z.url().default("https://shazam.p.rapidapi.com"),
  });
  const acrcloud: ACRCloudConfig | null =
    e.ACRCLOUD_HOST && e.ACRCLOUD_ACCESS_KEY && e.ACRCLOUD_ACCESS_SECRET
      ? {
        host: e.ACRCLOUD_HOST,
        accessKey: e.ACRCLOUD_ACCESS_KEY,
        accessSecret: e.ACRCLOUD_ACCESS_SECRET,
      }
      : null;
  const shazam: ShazamConfig | null = e.SHAZAM_API_KEY
    ? { apiKey: e.SHAZAM_API_KEY, baseUrl: e.SHAZAM_BASE_URL }
    : null;
  return {
    limits: {
      perMin: e.RECALL_RATE_LIMIT_PER_MIN,
      perHour: e.RECALL_RATE_LIMIT_PER_HOUR,
      concurrency: e.RECALL_CONCURRENCY,
    },
    /** Per provider call (each also capped by what is left of the request budget). */
    timeouts: {
      transcribeMs: e.RECALL_TRANSCRIBE_TIMEOUT_MS,
      intentMs: e.RECALL_INTENT_TIMEOUT_MS,
      candidatesMs: e.RECALL_CANDIDATES_TIMEOUT_MS,
      /** ACRCloud identify and Shazam detect. */
      recognitionMs: e.RECALL_RECOGNITION_TIMEOUT_MS,
    },
    /** How long a complete (not degraded) provider answer is reused for identical input. */
    answerTtlS: e.RECALL_ANSWER_TTL_S,
    acrcloud,
    shazam,
  };
}
