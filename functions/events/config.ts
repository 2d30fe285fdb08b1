/**
 * `events`' own settings, read from the environment at app creation.
 *
 * @module
 */
import { type Env, int, section } from "../../shared/config.ts";

/** `events`' settings. */
export type EventsConfig = ReturnType<typeof eventsConfig>;

/** Parses `events`' settings out of `env`. Throws an Error naming every bad variable. */
export function eventsConfig(env: Env) {
  const e = section(env, {
    /** Batches per signed-in user per minute. */
    EVENTS_RATE_LIMIT_PER_MIN: int(60),
    /** Batches per client IP per minute from anonymous senders. */
    ANON_WRITE_RATE_LIMIT_PER_MIN: int(30),
  });
  return {
    perUserPerMin: e.EVENTS_RATE_LIMIT_PER_MIN,
    anonPerMin: e.ANON_WRITE_RATE_LIMIT_PER_MIN,
  };
}
