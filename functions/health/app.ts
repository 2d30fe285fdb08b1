/**
 * `health`: is this isolate able to reach its database and Redis? Anonymous, never hangs
 * past 2 s: each check gets its own short deadline.
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";
import { config } from "../../shared/config.ts";
import { sql } from "../../shared/db.ts";
import { createApp } from "../../shared/http.ts";
import { redis } from "../../shared/redis.ts";

const checkTimeoutMs = 1500;

const Check = z.object({
  ok: z.boolean(),
  latency_ms: z.number(),
  error: z.string().optional(),
  mode: z.string().optional(),
});
const Health = z.object({
  status: z.enum(["ok", "degraded"]),
  checks: z.object({ db: Check, redis: Check }),
  version: z.string(),
}).openapi("Health");

export const app = createApp("health", { budgetMs: 2000 });

const route = createRoute({
  method: "get",
  path: "/",
  summary: "Liveness of the database and Redis",
  responses: {
    200: { description: "all ok", content: { "application/json": { schema: Health } } },
    503: {
      description: "a dependency is down",
      content: { "application/json": { schema: Health } },
    },
  },
});

app.openapi(route, async (c) => {
  const [db, cache] = await Promise.all([
    check(async () => {
      const q = sql`select 1`;
      const timer = setTimeout(() => q.cancel(), checkTimeoutMs);
      try {
        await q;
      } finally {
        clearTimeout(timer);
      }
    }),
    redis
      ? check(() => redis!.ping())
      : Promise.resolve({ ok: true, latency_ms: 0, mode: "in-process" }),
  ]);
  const ok = db.ok && cache.ok;
  const body = {
    status: ok ? "ok" as const : "degraded" as const,
    checks: { db, redis: cache },
    version: config.version,
  };
  c.header("cache-control", "no-store");
  return ok ? c.json(body, 200) : c.json(body, 503);
});

async function check(probe: () => Promise<unknown>) {
  const start = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      probe(),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer in ${checkTimeoutMs} ms`)),
          checkTimeoutMs,
        );
      }),
    ]);
    return { ok: true, latency_ms: round(performance.now() - start) };
  } catch (err) {
    return {
      ok: false,
      latency_ms: round(performance.now() - start),
      error: err instanceof Error ? err.message : String(err),
    };
  } finally {
    clearTimeout(timer);
  }
}

const round = (ms: number) => Math.round(ms * 100) / 100;
