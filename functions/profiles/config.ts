/**
 * `profiles`' own settings (the shared ones are `deps.config`).
 *
 * @module
 */
import { type Env, int, section } from "../../shared/config.ts";

/** `profiles`' settings of `env`. Throws an Error naming every bad variable. */
export function profilesConfig(env: Env) {
  const e = section(env, {
    /** `GET /profiles/search` per user a minute. */
    PROFILE_SEARCH_RATE_LIMIT_PER_MIN: int(60),
    /** How long a profile stays cached (edits and follows invalidate it at once). */
    PROFILE_CACHE_TTL_S: int(300),
    /** `PATCH /profiles/me` per user a minute. */
    PROFILE_EDIT_RATE_LIMIT_PER_MIN: int(30),
    /** Follows and unfollows per user a minute: the same budget as `posts`' like batches. */
    LIKES_RATE_LIMIT_PER_MIN: int(120),
  });
  return {
    searchPerMin: e.PROFILE_SEARCH_RATE_LIMIT_PER_MIN,
    cacheTtlS: e.PROFILE_CACHE_TTL_S,
    editsPerMin: e.PROFILE_EDIT_RATE_LIMIT_PER_MIN,
    followsPerMin: e.LIKES_RATE_LIMIT_PER_MIN,
  };
}

/** What {@link profilesConfig} returns. */
export type ProfilesConfig = ReturnType<typeof profilesConfig>;
