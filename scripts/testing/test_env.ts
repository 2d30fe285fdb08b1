/**
 * Environment for a function's integration tests: its own migrated database, its own Redis
 * key prefix behind the Upstash REST bridge, and a signing key for access tokens. Call it
 * before importing the function's app (config is read at module load).
 *
 * @module
 */
import { Redis } from "@upstash/redis";
import { createDevKeys, type DevKeys } from "../dev/dev_auth.ts";
import { startRedisBridge } from "../dev/redis_bridge.ts";
import { testDatabase } from "./test_db.ts";
import { deleteKeys, testRedisUrl } from "./test_redis.ts";

/** What a function test gets. */
export interface FunctionTestEnv {
  db: Awaited<ReturnType<typeof testDatabase>>;
  keys: DevKeys;
  bridge: Awaited<ReturnType<typeof startRedisBridge>> | null;
  redisPrefix: string;
  close(): Promise<void>;
}

/** Sets DATABASE_URL, SUPABASE_JWKS, UPSTASH_REDIS_REST_* (unless `redis: false`) and more. */
export async function functionTestEnv(
  options: { redis?: boolean; env?: Record<string, string> } = {},
): Promise<FunctionTestEnv> {
  const db = await testDatabase();
  const keys = await createDevKeys();
  const redisPrefix = `test:${crypto.randomUUID().slice(0, 8)}:`;
  const bridge = options.redis === false ? null : await startRedisBridge({
    redisUrl: testRedisUrl(),
    token: crypto.randomUUID(),
    port: 0,
  });
  Deno.env.set("DATABASE_URL", db.url);
  Deno.env.set("SUPABASE_JWKS", JSON.stringify(keys.jwks));
  Deno.env.set("REDIS_PREFIX", redisPrefix);
  Deno.env.set("LOG_REQUESTS", "false");
  if (bridge) {
    Deno.env.set("UPSTASH_REDIS_REST_URL", bridge.url);
    Deno.env.set("UPSTASH_REDIS_REST_TOKEN", bridge.token);
  } else {
    Deno.env.delete("UPSTASH_REDIS_REST_URL");
    Deno.env.delete("UPSTASH_REDIS_REST_TOKEN");
  }
  for (const [k, v] of Object.entries(options.env ?? {})) Deno.env.set(k, v);
  return {
    db,
    keys,
    bridge,
    redisPrefix,
    async close() {
      if (bridge) {
        const redis = new Redis({ url: bridge.url, token: bridge.token, enableTelemetry: false });
        await deleteKeys(redis, `${redisPrefix}*`);
        await bridge.close();
      }
      await db[Symbol.asyncDispose]();
    },
  };
}
