/**
 * `thread-summary`'s own settings, read from the environment at app creation.
 *
 * @module
 */
import { type Env, int, section } from "../../shared/config.ts";

/** `thread-summary`'s settings. */
export type ThreadSummaryConfig = ReturnType<typeof threadSummaryConfig>;

/** Parses `thread-summary`'s settings out of `env`. Throws an Error naming every bad variable. */
export function threadSummaryConfig(env: Env) {
  const e = section(env, {
    /** The newest replies the model may see (fewer when they exceed the character budget). */
    SUMMARY_MAX_REPLIES: int(50),
    /** Characters of replies in one prompt (the newest first; always at least one reply). */
    SUMMARY_MAX_INPUT_CHARS: int(12_000),
    /** One model call's deadline; regeneration's lock and waits are sized from it. */
    SUMMARY_LLM_TIMEOUT_MS: int(20_000),
    /** Backoff before the LLM is tried again after a failure (doubling, at most an hour). */
    SUMMARY_RETRY_AFTER_S: int(60),
  });
  return {
    maxReplies: e.SUMMARY_MAX_REPLIES,
    maxInputChars: e.SUMMARY_MAX_INPUT_CHARS,
    llmTimeoutMs: e.SUMMARY_LLM_TIMEOUT_MS,
    retryAfterS: e.SUMMARY_RETRY_AFTER_S,
  };
}
