/**
 * `jobs-worker`: runs background jobs on the edge, for a cron trigger (secret API key
 * only, never a user token). `POST /run` drains runnable jobs with a pool of N concurrent
 * tasks within a wall-clock budget that fits the edge runtime: it stops claiming one task
 * timeout before the budget ends, so every task it starts can finish. `POST /digests`
 * schedules a day's digests; `GET /metrics` is this isolate's Prometheus text (queue depth
 * included).
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { Deps } from "../../shared/deps.ts";
import { jobTypes } from "../../shared/domain/jobs.ts";
import { type App, createFunctionApp } from "../../shared/http/app.ts";
import { collectQueueDepth } from "../../shared/jobs/metrics.ts";
import { runWorkerPool } from "../../shared/jobs/pool.ts";
import { metrics } from "../../shared/http/metrics.ts";
import { invalidParameter } from "../../shared/http/problem.ts";
import { rateLimit } from "../../shared/resilience/ratelimit.ts";
import { jobsWorkerConfig } from "./config.ts";
import { isDay, scheduleDigests, yesterday } from "./handlers/digest.ts";
import { jobHandlers } from "./handlers/index.ts";

/** Margin between the last task's end and the budget's end (answer, commit). */
const answerMarginMs = 2000;

const RunSummary = z.object({
  claimed: z.number().int(),
  done: z.number().int(),
  failed: z.number().int(),
  retried: z.number().int(),
  dead: z.number().int(),
  released: z.number().int(),
  recovered: z.number().int(),
  ms: z.number().int(),
}).openapi("RunSummary");

const DigestsQuery = z.object({
  day: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, "YYYY-MM-DD").optional(),
});

/**
 * The `jobs-worker` app on `deps`. Reads `jobs-worker`'s settings at once (a bad value fails
 * here, at boot), builds the handlers and registers the queue-depth metric.
 */
export function createApp(deps: Deps): App {
  const settings = jobsWorkerConfig(deps.env);
  const { auth, db } = deps;
  const app = createFunctionApp("jobs-worker", deps, {
    budgetMs: settings.runBudgetMs,
    anonymousBodies: true, // the secret key is checked by its routes
  });
  // A cron calls once a minute; a leaked key or a runaway loop must not start runs without end.
  const limitRuns = rateLimit(
    deps.rateLimiter({
      name: "jobs-runs",
      windows: [{ limit: settings.runsPerMin, windowS: 60 }],
      failOpen: true,
    }),
    () => "secret-key",
  );
  const handlers = jobHandlers(deps);
  // `GET /metrics` reports the depth of every registered job type (once per isolate).
  collectQueueDepth(db, jobTypes);

  const runRoute = createRoute({
    method: "post",
    path: "/run",
    summary: "Claim and run jobs until the queue is empty or the time budget is used",
    security: [{ apikey: [] }],
    middleware: [auth.requireSecretKey(), limitRuns] as const,
    responses: {
      200: { description: "what ran", content: { "application/json": { schema: RunSummary } } },
    },
  });

  app.openapi(runRoute, async (c) => {
    const { concurrency, taskTimeoutMs, runBudgetMs } = settings;
    const summary = await runWorkerPool({
      workerId: `edge-${crypto.randomUUID().slice(0, 8)}`,
      concurrency,
      handlers,
      taskTimeoutMs,
      claimUntil: Date.now() + Math.max(0, runBudgetMs - taskTimeoutMs - answerMarginMs),
      // The budget expired or the caller went away: hand back what is still running.
      abort: c.var.budget.aborted,
      db: db.sql,
    });
    c.header("cache-control", "no-store");
    return c.json(summary, 200);
  });

  const digestsRoute = createRoute({
    method: "post",
    path: "/digests",
    summary: "Schedule the daily digests of one UTC day (default: yesterday); idempotent",
    security: [{ apikey: [] }],
    middleware: [auth.requireSecretKey(), limitRuns] as const,
    request: { query: DigestsQuery },
    responses: {
      202: {
        description: "jobs created (0 when already scheduled)",
        content: {
          "application/json": {
            schema: z.object({ day: z.string(), scheduled: z.number().int() }),
          },
        },
      },
    },
  });

  app.openapi(digestsRoute, async (c) => {
    const day = c.req.valid("query").day ?? yesterday();
    if (!isDay(day)) throw invalidParameter("day", "not a calendar date");
    const scheduled = await scheduleDigests(db.sql, day);
    return c.json({ day, scheduled }, 202);
  });

  const metricsRoute = createRoute({
    method: "get",
    path: "/metrics",
    summary: "This isolate's counters, histograms and the queue depth (Prometheus text)",
    security: [{ apikey: [] }],
    middleware: [auth.requireSecretKey()] as const,
    responses: {
      200: { description: "Prometheus text", content: { "text/plain": { schema: z.string() } } },
    },
  });

  app.openapi(metricsRoute, async (c) => {
    c.header("cache-control", "no-store");
    c.header("content-type", "text/plain; version=0.0.4; charset=utf-8");
    return c.text(await metrics.render(), 200);
  });

  return app;
}
