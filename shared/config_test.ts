import { assertEquals, assertMatch } from "../scripts/testing/assert.ts";
import { feedConfig } from "../functions/feed/config.ts";
import { jobsWorkerConfig } from "../functions/jobs-worker/config.ts";
import { recallResolveConfig } from "../functions/recall-resolve/config.ts";
import { loadConfig } from "./config.ts";
const base = { DATABASE_URL: "postgres://u@h:6543/db", SUPABASE_JWKS: '{"keys":[]}' };

function errorOf(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error("expected the config to be refused");
}

Deno.test("a bad or missing value fails naming the variable", () => {
  assertMatch(errorOf({ SUPABASE_JWKS: '{"keys":[]}' }), /DATABASE_URL: required/);
  assertMatch(errorOf({ ...base, DATABASE_URL: "mysql://x" }), /DATABASE_URL/);
  assertMatch(errorOf({ ...base, DB_POOL_MAX: "lots" }), /DB_POOL_MAX/);
  assertMatch(
    errorOf({ ...base, SUPABASE_JWKS: "not json" }),
    /SUPABASE_JWKS: must be a JSON Web Key Set/,
  );
  assertMatch(
    errorOf({ ...base, UPSTASH_REDIS_REST_URL: "https://x.upstash.io" }),
    /UPSTASH_REDIS_REST_TOKEN/,
  );
  assertMatch(errorOf({ ...base, SUPABASE_SECRET_KEYS: "nope" }), /SUPABASE_SECRET_KEYS/);
});

Deno.test("defaults, SUPABASE_DB_URL fallback and the JWKS URL derived from SUPABASE_URL", () => {
  const c = loadConfig({
    SUPABASE_DB_URL: "postgres://u@h:5432/db",
    SUPABASE_URL: "https://abc.supabase.co",
  });
  assertEquals(c.databaseUrl, "postgres://u@h:5432/db");
  assertEquals(c.auth.jwksUrl, "https://abc.supabase.co/auth/v1/.well-known/jwks.json");
  assertEquals(c.redis, null);
  assertEquals(c.dbPoolMax, 4);
  // Each function's own settings are read by the function, with their defaults.
  assertEquals(feedConfig({}).perMin, 120);
  assertEquals(recallResolveConfig({}).limits.perHour, 100);
});

Deno.test("a process that verifies no tokens (the worker) needs only the database", () => {
  const c = loadConfig({ DATABASE_URL: base.DATABASE_URL });
  assertEquals(c.databaseUrl, base.DATABASE_URL);
  assertEquals(jobsWorkerConfig({}).concurrency, 4);
  // …while reading the auth settings (every function does, when its app is built) still names
  // the variable.
  let message = "";
  try {
    c.auth;
  } catch (err) {
    message = (err as Error).message;
  }
  assertMatch(message, /SUPABASE_JWKS: required/);
});
