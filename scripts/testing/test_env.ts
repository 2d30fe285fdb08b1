/**
 * Environment for a function's integration tests: its own migrated database, its own Redis
 * key prefix behind the Upstash REST bridge, a signing key for access tokens, and the
 * {@link Deps} built from all that. Nothing is written to the process environment, so test
 * files run in parallel and one file may build several apps with different settings:
 *
 *   const env = await functionTestEnv({ env: { FEED_RATE_LIMIT_PER_MIN: "5" } });
 *   const app = createApp(env.deps);
 *   …
 *   await env.close();
 *
 * @module
 */
import { Redis } from "@upstash/redis";
import { createDeps, type Deps } from "../../shared/deps.ts";
import type { Env } from "../../shared/config.ts";
import { createDevKeys, type DevKeys } from "../dev/dev_auth.ts";
import { startRedisBridge } from "../dev/redis_bridge.ts";
import { testDatabase } from "./test_db.ts";
import { deleteKeys, testRedisUrl } from "./test_redis.ts";

/** What a function test gets. */
export interface FunctionTestEnv {
  db: Awaited<ReturnType<typeof testDatabase>>;
  keys: DevKeys;
  bridge: Awaited<ReturnType<typeof startRedisBridge>>;
  redisPrefix: string;
  /** The environment `deps` was built from (pass it, changed, to {@link withEnv}). */
  env: Env;
  /** The app's dependencies on this database, Redis prefix and key set. */
  deps: Deps;
  /**
   * More deps on the same database, Redis prefix and keys, with `env` laid over (another
   * isolate, or other settings); closed with this environment.
   */
  withEnv(env: Env): Deps;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * A database (a copy of the migrated template), a Redis prefix behind a fresh REST bridge,
 * a signing key, and deps built from DATABASE_URL, SUPABASE_JWKS, UPSTASH_REDIS_REST_*,
 * REDIS_PREFIX and LOG_REQUESTS=false, with `options.env` laid over them.
 */
export async function functionTestEnv(
  options: { env?: Env } = {},
): Promise<FunctionTestEnv> {
  const db = await testDatabase();
  const keys = await createDevKeys();
  const redisPrefix = `test:${crypto.randomUUID().slice(0, 8)}:`;
  const bridge = await startRedisBridge({
    redisUrl: testRedisUrl(),
    token: crypto.randomUUID(),
    port: 0,
  });
  const base: Env = {
    DATABASE_URL: db.url,
    SUPABASE_JWKS: JSON.stringify(keys.jwks),
    REDIS_PREFIX: redisPrefix,
    LOG_REQUESTS: "false",
    UPSTASH_REDIS_REST_URL: bridge.url,
    UPSTASH_REDIS_REST_TOKEN: bridge.token,
    ...options.env,
  };
  const made: Deps[] = [];
  const withEnv = (env: Env) => {
    const deps = createDeps({ ...base, ...env });
    made.push(deps);
    return deps;
  };
  const deps = withEnv({});
  /**
   * Closes the deps' pools and deletes the prefix's keys; then, whatever failed, releases the
   * bridge and the database. The first error is thrown once everything ran.
   */
  const close = async () => {
    let failed: { error: unknown } | undefined;
    const keep = (error: unknown) => void (failed ??= { error });
    try {
      for (const result of await Promise.allSettled(made.map((d) => d.close()))) {
        if (result.status === "rejected") keep(result.reason);
      }
      const redis = new Redis({ url: bridge.url, token: bridge.token, enableTelemetry: false });
      await deleteKeys(redis, `${redisPrefix}*`);
    } catch (error) {
      keep(error);
    } finally {
      await bridge.close().catch(keep);
      await db[Symbol.asyncDispose]().catch(keep);
    }
    if (failed) throw failed.error;
  };
  return {
    db,
    keys,
    bridge,
    redisPrefix,
    env: base,
    deps,
    withEnv,
    close,
    [Symbol.asyncDispose]: close,
  };
}
