/**
 * `feed`'s own settings, read from the environment at app creation.
 *
 * @module
 */
import { type Env, int, section } from "../../shared/config.ts";

/** `feed`'s settings. */
export type FeedConfig = ReturnType<typeof feedConfig>;

/** Parses `feed`'s settings out of `env`. Throws an Error naming every bad variable. */
export function feedConfig(env: Env) {
  const e = section(env, {
    /** Feed pages per user per minute. */
    FEED_RATE_LIMIT_PER_MIN: int(120),
    /** How long the shared for-you page is fresh (then served stale as long again). */
    FEED_FOR_YOU_TTL_S: int(30),
    /** How long a user's following page is cached. */
    FEED_FOLLOWING_TTL_S: int(15),
  });
  return {
    perMin: e.FEED_RATE_LIMIT_PER_MIN,
    forYouTtlS: e.FEED_FOR_YOU_TTL_S,
    followingTtlS: e.FEED_FOLLOWING_TTL_S,
  };
}
