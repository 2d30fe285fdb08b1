/**
 * `npm run worker`: a long-running local worker. N concurrent loops drain the jobs queue
 * (polling when it is empty) with the same handlers as the `jobs-worker` function. Any
 * number of these may run at once, next to `jobs-worker` runs.
 *
 *   DATABASE_URL=… npm run worker -- [--concurrency 4] [--poll-ms 1000] [--grace-ms 10000]
 *
 * SIGTERM / SIGINT: stop claiming, let running jobs finish for up to `--grace-ms`, then
 * abort what is still running and release those jobs (runnable again at once, attempt not
 * counted), and exit. A worker killed outright (SIGKILL) leaves its jobs locked until their
 * lock timeout; the next worker's recovery makes them runnable again.
 *
 * @module
 */

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

// Config is read when these load: after the environment above is set.
const { config } = await import("../shared/config.ts");
const { sql } = await import("../shared/db.ts");
const { runWorkerPool } = await import("../shared/jobs/pool.ts");
const { jobHandlers } = await import("../functions/jobs-worker/handlers/index.ts");

const workerId = `local-${Deno.hostname()}-${Deno.pid}`;
const stop = new AbortController();
const abort = new AbortController();
let graceTimer: ReturnType<typeof setTimeout> | undefined;
const shutdown = (signal: string) => {
  if (stop.signal.aborted) {
    abort.abort(new Error(`second ${signal}`));
    return;
  }
  console.log(JSON.stringify({ msg: "worker stopping", signal, grace_ms: graceMs }));
  stop.abort();
  graceTimer = setTimeout(() => abort.abort(new Error("shutdown grace expired")), graceMs);
};
Deno.addSignalListener("SIGTERM", () => shutdown("SIGTERM"));
Deno.addSignalListener("SIGINT", () => shutdown("SIGINT"));

const handlers = jobHandlers();
console.log(JSON.stringify({
  msg: "worker started",
  worker: workerId,
  concurrency,
  job_types: Object.keys(handlers),
  task_timeout_ms: config.jobs.taskTimeoutMs,
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
