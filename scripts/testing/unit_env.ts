/**
 * Deps for unit tests of `shared/` modules that build an app but need no service: a database
 * URL that is never dialled (postgres.js connects on the first statement) and a Redis that
 * refuses at once, so a limit that asks it fails open or closed as it would in production.
 * Nothing is read from or written to the process environment.
 *
 *   const deps = unitDeps({ MAX_BODY_BYTES: "10" });
 *   const app = createFunctionApp("t", deps);
 *
 * @module
 */
import type { Env } from "../../shared/config.ts";
import { createDeps, type Deps } from "../../shared/deps.ts";

/** The minimal valid environment of a unit test. */
export const unitEnv: Env = {
  DATABASE_URL: "postgres://unit-test@127.0.0.1:1/none",
  SUPABASE_JWKS: '{"keys":[]}',
  UPSTASH_REDIS_REST_URL: "http://127.0.0.1:1",
  UPSTASH_REDIS_REST_TOKEN: "unit-test",
  LOG_REQUESTS: "false",
};

/** Deps of {@link unitEnv} with `env` laid over it. */
export function unitDeps(env: Env = {}): Deps {
  return createDeps({ ...unitEnv, ...env });
}
