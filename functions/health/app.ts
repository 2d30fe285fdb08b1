/**
 * `health`: is this isolate able to reach its database and Redis? Never hangs past 2 s: each
 * check gets its own short deadline. Anyone may ask and learns the status only; the checks,
 * breakers and version, and `GET /health/metrics`, need a secret API key (the same rule as
 * `jobs-worker/metrics`): they tell an attacker which dependency to push on.
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import type { Deps } from "../../shared/deps.ts";
import { type App, createFunctionApp } from "../../shared/http/app.ts";
import { jobTypes } from "../../shared/domain/jobs.ts";
import { collectQueueDepth } from "../../shared/jobs/metrics.ts";
import { collectDbConnections, metrics } from "../../shared/http/metrics.ts";
import { anonymousReads } from "../../shared/resilience/ratelimit.ts";
import { ping } from "./queries.ts";

const checkTimeoutMs = 1500;

const Check = z.object({
  ok: z.boolean(),
  latency_ms: z.number(),
  error: z.string().optional(),
});
const Breaker = z.object({
  name: z.string(),
  state: z.enum(["closed", "open", "half_open"]).optional(),
  generation: z.number().optional(),
  failures: z.number().optional(),
  open_until: z.number().nullable().optional(),
  error: z.string().optional(),
});
const Health = z.object({
  status: z.enum(["ok", "degraded"]),
  /** Only with a secret API key, like `breakers` and `version`. */
  checks: z.object({ db: Check, redis: Check }).optional(),
  /** Circuit breakers of the external APIs: an open one degrades features, not health. */
  breakers: z.array(Breaker).optional(),
  version: z.string().optional(),
}).openapi("Health");

/** The `health` app on `deps`. */
export function createApp(deps: Deps): App {
  const requireSecretKey = deps.auth.requireSecretKey();
  const app = createFunctionApp("health", deps, { budgetMs: 2000, shed: false });

  // The queue is global state: any isolate's metrics export can report its depth.
  collectQueueDepth(deps.db, jobTypes);
  collectDbConnections(deps.db.healthSql);

  const route = createRoute({
    method: "get",
    path: "/",
    middleware: [anonymousReads(deps.anonReads, deps.clientIp)] as const,
    summary: "Liveness of the database and Redis (details with a secret API key)",
    responses: {
      200: { description: "all ok", content: { "application/json": { schema: Health } } },
      503: {
        description: "a dependency is down",
        content: { "application/json": { schema: Health } },
      },
    },
  });

  app.openapi(route, async (c) => {
    const [db, cache, breakers] = await Promise.all([
      // On a connection of its own: a saturated pool is load, not an outage.
      check(async () => {
        const q = ping(deps.db.healthSql);
        const timer = setTimeout(() => q.cancel(), checkTimeoutMs);
        try {
          await q;
        } finally {
          clearTimeout(timer);
        }
      }),
      check(() => deps.redis.ping()),
      withDeadline(deps.breakers.health(), checkTimeoutMs).catch(() => []),
    ]);
    const ok = db.ok && cache.ok;
    const body = {
      status: ok ? "ok" as const : "degraded" as const,
      checks: { db, redis: cache },
      breakers: breakers.map((b) => ({
        name: b.name,
        ...("error" in b ? { error: b.error } : {
          state: b.state,
          generation: b.generation,
          failures: b.failures,
          open_until: b.open_until ?? null,
        }),
      })),
      version: deps.config.version,
    };
    c.header("cache-control", "no-store");
    const shown = await hasSecretKey(requireSecretKey, c) ? body : { status: body.status };
    return ok ? c.json(shown, 200) : c.json(shown, 503);
  });

  const metricsRoute = createRoute({
    method: "get",
    path: "/metrics",
    summary: "This isolate's counters, histograms and gauges (RSS, database connections), " +
      "Prometheus text format",
    security: [{ apikey: [] }],
    middleware: [requireSecretKey] as const,
    responses: {
      200: { description: "Prometheus text", content: { "text/plain": { schema: z.string() } } },
      401: { description: "no secret API key" },
    },
  });

  app.openapi(metricsRoute, async (c) => {
    c.header("cache-control", "no-store");
    const text = await metrics.render();
    c.header("content-type", "text/plain; version=0.0.4; charset=utf-8");
    return c.text(text, 200);
  });

  return app;
}

/** Whether the caller presented a secret API key, as `requireSecretKey` checks (never throws). */
async function hasSecretKey(requireSecretKey: MiddlewareHandler, c: Context): Promise<boolean> {
  if (!c.req.header("apikey") && !c.req.header("authorization")) return false;
  try {
    await requireSecretKey(c, () => Promise.resolve());
    return true;
  } catch {
    return false;
  }
}

/** Rejects when `work` takes longer than `ms`. */
async function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function check(probe: () => Promise<unknown>) {
  const start = performance.now();
  try {
    await withDeadline(probe(), checkTimeoutMs);
    return { ok: true, latency_ms: round(performance.now() - start) };
  } catch (err) {
    return {
      ok: false,
      latency_ms: round(performance.now() - start),
      error: err instanceof Error ? err.message : String(err),
    };
  }
}

const round = (ms: number) => Math.round(ms * 100) / 100;
