/**
 * `recall`'s own settings, read from the environment at app creation.
 *
 * @module
 */
import { type Env, int, section } from "../../shared/config.ts";

/** `recall`'s settings. */
export type RecallConfig = ReturnType<typeof recallConfig>;

/** Parses `recall`'s settings out of `env`. Throws an Error naming every bad variable. */
export function recallConfig(env: Env) {
  const e = section(env, {
    /** Reads and deletes per user per minute (one limit for every route). */
    RECALL_READ_RATE_LIMIT_PER_MIN: int(120),
  });
  return { readsPerMin: e.RECALL_READ_RATE_LIMIT_PER_MIN };
}
