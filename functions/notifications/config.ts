/**
 * `notifications`' own settings, read from the environment at app creation.
 *
 * @module
 */
import { type Env, int, section } from "../../shared/config.ts";

/** `notifications`' settings. */
export type NotificationsConfig = ReturnType<typeof notificationsConfig>;

/** Parses `notifications`' settings out of `env`. Throws an Error naming every bad variable. */
export function notificationsConfig(env: Env) {
  const e = section(env, {
    /** Reads and mark-read calls per user per minute (one limit for both). */
    NOTIFICATIONS_RATE_LIMIT_PER_MIN: int(120),
  });
  return { perMin: e.NOTIFICATIONS_RATE_LIMIT_PER_MIN };
}
