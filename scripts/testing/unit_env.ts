/**
 * Import first in unit tests of `shared/` modules: gives `shared/config.ts` a valid minimal
 * environment (a database URL that is never dialled, an empty key set, no Redis), unless the
 * test already set one.
 *
 * @module
 */
if (!Deno.env.get("DATABASE_URL")) {
  Deno.env.set("DATABASE_URL", "postgres://unit-test@127.0.0.1:1/none");
}
if (!Deno.env.get("SUPABASE_JWKS")) Deno.env.set("SUPABASE_JWKS", '{"keys":[]}');
Deno.env.delete("UPSTASH_REDIS_REST_URL");
Deno.env.delete("UPSTASH_REDIS_REST_TOKEN");
Deno.env.set("LOG_REQUESTS", "false");
