/**
 * `npm run worker`: a long-running local worker. N concurrent loops drain the jobs queue
 * (polling when it is empty) with the same handlers as the `jobs-worker` function. Any
 * number of these may run at once, next to `jobs-worker` runs.
 *
 *   npm run worker -- [--concurrency 4] [--poll-ms 1000] [--grace-ms 10000]
 *
 * With `npm start` running, it uses that stack's database, Redis and model (stand-in
 * included) from .local/stack.json; DATABASE_URL and the others, when set, win. It needs
 * no auth settings. One log line per job.
 *
 * SIGTERM / SIGINT: stop claiming, let running jobs finish for up to `--grace-ms`, then
 * abort what is still running and release those jobs (runnable again at once, attempt not
 * counted), and exit. A worker killed outright (SIGKILL) leaves its jobs locked until their
 * lock timeout; the next worker's recovery makes them runnable again.
 *
 * @module
 */

import type { JobHandler } from "../../shared/jobs/pool.ts";
import { useLocalStack } from "./stack.ts";

function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  const value = i >= 0 ? Number(Deno.args[i + 1]) : fallback;
  if (!Number.isFinite(value) || value < 0) throw new Error(`--${name} must be a number`);
  return value;
}

const concurrency = flag("concurrency", Number(Deno.env.get("JOBS_CONCURRENCY") ?? 4));
const pollMs = flag("poll-ms", 1000);
const graceMs = flag("grace-ms", 10_000);
// One connection per loop plus one for recovery, unless told otherwise.
if (!Deno.env.get("DB_POOL_MAX")) Deno.env.set("DB_POOL_MAX", String(concurrency + 1));

const stack = await useLocalStack();
if (!Deno.env.get("DATABASE_URL") && !Deno.env.get("SUPABASE_DB_URL")) {
  console.error(
    "no database: start the stack (npm start) in another terminal, or set DATABASE_URL",
  );
  Deno.exit(2);
}

// Config is read when these load: after the environment above is set.
const { config } = await import("../../shared/config.ts");
const { sql } = await import("../../shared/db.ts");
const { runWorkerPool } = await import("../../shared/jobs/pool.ts");
const { jobHandlers } = await import("../../functions/jobs-worker/handlers/index.ts");

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
  Object.entries(jobHandlers()).map(([type, handler]) => [type, logged(type, handler)]),
);
console.log(JSON.stringify({
  msg: "worker started",
  worker: workerId,
  concurrency,
  job_types: Object.keys(handlers),
  task_timeout_ms: config.jobs.taskTimeoutMs,
  ...(stack ? { stack: stack.baseUrl } : {}),
  ...(config.openai?.apiKey === "stand-in" ? { model: "stand-in" } : {}),
}));
const summary = await runWorkerPool({
  workerId,
  concurrency,
  handlers,
  taskTimeoutMs: config.jobs.taskTimeoutMs,
  pollMs,
  stop: stop.signal,
  abort: abort.signal,
});
clearTimeout(graceTimer);
console.log(JSON.stringify({ msg: "worker stopped", worker: workerId, ...summary }));
await sql.end({ timeout: 5 });
Deno.exit(0);
