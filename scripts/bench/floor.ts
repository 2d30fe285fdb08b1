/**
 * The floor of the benchmark: a bare `Deno.serve` handler doing one indexed Postgres query
 * and one Redis GET (through the same Upstash client and bridge as production) — the
 * physical limit of our stack on this machine. No framework, auth, limits or caching.
 *
 * Env: DATABASE_URL, UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN, PORT.
 *
 * @module
 */
import postgres from "postgres";
import { Redis } from "@upstash/redis";

const sql = postgres(Deno.env.get("DATABASE_URL")!, { prepare: false, max: 4 });
const redis = new Redis({
  url: Deno.env.get("UPSTASH_REDIS_REST_URL")!,
  token: Deno.env.get("UPSTASH_REDIS_REST_TOKEN")!,
  enableTelemetry: false,
});
const ids =
  (await sql<{ id: string }[]>`select id from public.posts order by created_at desc limit 1000`)
    .map((r) => r.id);
await redis.set("bench:floor", "1");
let n = 0;

Deno.serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT")),
  onListen: () => console.log("ready"),
}, async () => {
  const id = ids[n++ % ids.length];
  const [[post], flag] = await Promise.all([
    sql`select id, body, like_count from public.posts where id = ${id}`,
    redis.get("bench:floor"),
  ]);
  return Response.json({ post, flag });
});
