/**
 * `npm run worker`: a long-running local worker. N concurrent loops drain the jobs queue
 * (polling when it is empty) with the same handlers as the `jobs-worker` function. Any
 * number of these may run at once, next to `jobs-worker` runs.
 *
 *   npm run worker -- [--concurrency 4] [--poll-ms 1000] [--grace-ms 10000]
 *
 * With `npm start` running, it uses that stack's database, Redis and model (stand-in
 * included) from .local/stack.json; DATABASE_URL and the others, when set, win. It needs
 * no auth settings, nor Redis (without it, the model's circuit breaker lets every call
 * through). One log line per job.
 *
 * SIGTERM / SIGINT: stop claiming, let running jobs finish for up to `--grace-ms`, then
 * abort what is still running and release those jobs (runnable again at once, attempt not
 * counted), and exit. A worker killed outright (SIGKILL) leaves its jobs locked until their
 * lock timeout; the next worker's recovery makes them runnable again.
 *
 * @module
 */

import type { Redis } from "@upstash/redis";
import { loadConfig } from "../../shared/config.ts";
import { createDeps } from "../../shared/deps.ts";
import { type JobHandler, runWorkerPool } from "../../shared/jobs/pool.ts";
import { missingRedisMessage } from "../../shared/data/redis.ts";
import { jobsWorkerConfig } from "../../functions/jobs-worker/config.ts";
import { jobHandlers } from "../../functions/jobs-worker/handlers/index.ts";
import { useLocalStack } from "./stack.ts";

function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  const value = i >= 0 ? Number(Deno.args[i + 1]) : fallback;
  if (!Number.isFinite(value) || value < 0) throw new Error(`--${name} must be a number`);
  return value;
}

/**
 * The Redis of a worker run without one (no REDIS_URL / UPSTASH_*): every command fails
 * naming the missing variable. The jobs touch the database and, for `generate_reply`, the
 * model, whose circuit breaker is the only thing kept in Redis: a breaker fails open on a
 * store that throws (shared/resilience/breaker.ts, `failOpen` defaults to true), so calls go
 * through unguarded, with a warning each, as they did before deps were passed.
 */
function noRedis(): Redis {
  const missing = () => {
    throw new Error(missingRedisMessage);
  };
  // `then` stays undefined: awaiting it must not look like a promise.
  return new Proxy({}, { get: (_, key) => key === "then" ? undefined : missing }) as Redis;
}

// The process environment, completed from a running `npm start` (never written back).
const env: Record<string, string | undefined> = Deno.env.toObject();
const stack = await useLocalStack({ get: (k) => env[k], set: (k, v) => void (env[k] = v) });
if (!env.DATABASE_URL && !env.SUPABASE_DB_URL) {
  console.error(
    "no database: start the stack (npm start) in another terminal, or set DATABASE_URL",
  );
  Deno.exit(2);
}
const jobs = jobsWorkerConfig(env);
const concurrency = flag("concurrency", jobs.concurrency);
const pollMs = flag("poll-ms", 1000);
const graceMs = flag("grace-ms", 10_000);
// One connection per loop plus one for recovery, unless told otherwise.
env.DB_POOL_MAX ||= String(concurrency + 1);
const config = loadConfig(env);
// Redis holds the model's circuit breaker; without Redis the breaker fails open (noRedis).
const deps = createDeps(env, config.redis ? {} : { redis: noRedis() });

const workerId = `local-${Deno.hostname()}-${Deno.pid}`;
const stop = new AbortController();
const abort = new AbortController();
let graceTimer: ReturnType<typeof setTimeout> | undefined;
let first = { signal: "", at: 0 };
const shutdown = (signal: string) => {
  if (stop.signal.aborted) {
    // Ctrl-C under `npm start` reaches this process (SIGINT, the terminal's process group)
    // and npm start's SIGTERM at once: one stop, not "second signal, abort".
    if (signal !== first.signal && Date.now() - first.at < 2000) return;
    abort.abort(new Error(`second ${signal}`));
    return;
  }
  first = { signal, at: Date.now() };
  console.log(JSON.stringify({ msg: "worker stopping", signal, grace_ms: graceMs }));
  stop.abort();
  graceTimer = setTimeout(() => abort.abort(new Error("shutdown grace expired")), graceMs);
};
Deno.addSignalListener("SIGTERM", () => shutdown("SIGTERM"));
Deno.addSignalListener("SIGINT", () => shutdown("SIGINT"));

/** One line per job that ran to completion (the pool logs every failure itself). */
function logged(type: string, handler: JobHandler): JobHandler {
  return async (job, ctx) => {
    const start = performance.now();
    await handler(job, ctx);
    console.log(JSON.stringify({
      msg: "job done",
      job_id: job.id,
      job_type: type,
      attempt: job.attempts,
      ms: Math.round(performance.now() - start),
    }));
  };
}
const handlers = Object.fromEntries(
  Object.entries(jobHandlers(deps)).map(([type, handler]) => [type, logged(type, handler)]),
);
console.log(JSON.stringify({
  msg: "worker started",
  worker: workerId,
  concurrency,
  job_types: Object.keys(handlers),
  task_timeout_ms: jobs.taskTimeoutMs,
  ...(stack ? { stack: stack.baseUrl } : {}),
  ...(deps.config.openai?.apiKey === "stand-in" ? { model: "stand-in" } : {}),
}));
const summary = await runWorkerPool({
  workerId,
  concurrency,
  handlers,
  db: deps.db.sql,
  taskTimeoutMs: jobs.taskTimeoutMs,
  pollMs,
  stop: stop.signal,
  abort: abort.signal,
});
clearTimeout(graceTimer);
console.log(JSON.stringify({ msg: "worker stopped", worker: workerId, ...summary }));
await deps.close();
Deno.exit(0);
