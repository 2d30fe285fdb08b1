/**
 * `posts`' own settings (the shared ones are `deps.config`).
 *
 * @module
 */
import { type Env, int, section } from "../../shared/config.ts";

/** `posts`' settings of `env`. Throws an Error naming every bad variable. */
export function postsConfig(env: Env) {
  const e = section(env, {
    /** `POST /posts` per user a minute; `generate-replies` shares the number. */
    POST_RATE_LIMIT_PER_MIN: int(20),
    /** `POST /posts/{id}/replies` per user a minute. */
    REPLY_RATE_LIMIT_PER_MIN: int(30),
    /** `POST /posts/likes` batches per user a minute. */
    LIKES_RATE_LIMIT_PER_MIN: int(120),
  });
  return {
    postsPerMin: e.POST_RATE_LIMIT_PER_MIN,
    repliesPerMin: e.REPLY_RATE_LIMIT_PER_MIN,
    likesPerMin: e.LIKES_RATE_LIMIT_PER_MIN,
  };
}

/** What {@link postsConfig} returns. */
export type PostsConfig = ReturnType<typeof postsConfig>;
