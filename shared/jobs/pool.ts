/**
 * The worker pool: N loops that claim jobs, run their handler with a per-task timeout, and
 * record the outcome (done, retry with backoff, dead). Used by `jobs-worker/run` (drain
 * what is runnable within a time budget, then answer) and by `scripts/dev/worker.ts` (poll
 * forever, stop gracefully). Several pools may run at once, in any number of processes:
 * claims never hand the same job to two of them.
 *
 * @module
 */
import { Budget } from "../http/budget.ts";
import { metrics } from "../http/metrics.ts";
import { delay } from "../resilience/abort.ts";
import "./metrics.ts"; // describes the jobs_* series this pool records
import {
  claimJobs,
  completeJobs,
  type Db,
  failJob,
  type Job,
  recoverExpiredJobs,
  releaseJobs,
} from "./queue.ts";

/** What a handler gets besides its job. */
export interface JobContext {
  /** Aborted at the task timeout or when the worker is torn down: pass it to every call. */
  signal: AbortSignal;
  /** The task's budget (for `callUpstream`). */
  budget: Budget;
  /** The loop running the job (`<worker>/<n>`). */
  workerId: string;
}

/** Runs one job. Throwing fails the attempt (retried later, unless permanent). */
export type JobHandler = (job: Job, ctx: JobContext) => Promise<void>;

/** A failure that no retry can fix (bad payload, missing configuration): the job dies. */
export class PermanentJobError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PermanentJobError";
  }
}

/** How a pool runs. */
export interface PoolOptions {
  /** Prefix of the lock owner names; each loop is `<workerId>/<n>`. Unique per pool. */
  workerId: string;
  /** Concurrent loops (each runs one job at a time). */
  concurrency: number;
  /** Handlers by job type; only these types are claimed. */
  handlers: Record<string, JobHandler>;
  /** Per task, further capped 1 s below each job's lock timeout. */
  taskTimeoutMs: number;
  /** Jobs claimed per round trip by a loop (default 1); unstarted ones are released on stop. */
  batchSize?: number;
  /** Stop claiming (SIGTERM, budget): running tasks finish. */
  stop?: AbortSignal;
  /** Give up on running tasks: abort their signals and release their jobs. */
  abort?: AbortSignal;
  /** Stop claiming at this `Date.now()`. */
  claimUntil?: number;
  /** Poll an empty queue every `pollMs` instead of returning (long-running workers). */
  pollMs?: number;
  /** Recover jobs of lost workers at start and then this often (default 5000 ms). */
  recoverEveryMs?: number;
  /** Database client: the isolate's pool (`deps.db.sql`). */
  db: Db;
}

/** What a pool run did. */
export interface PoolSummary {
  claimed: number;
  done: number;
  /** Attempts that threw or timed out (retried + dead). */
  failed: number;
  retried: number;
  dead: number;
  /** Handed back unfinished at shutdown. */
  released: number;
  /** Jobs of lost workers made runnable again. */
  recovered: number;
  ms: number;
}

/** Time kept between a task's timeout and its lock's expiry. */
const lockMarginMs = 1000;

/** Runs the pool until the queue is empty (no `pollMs`) or it is stopped. */
export async function runWorkerPool(options: PoolOptions): Promise<PoolSummary> {
  const db = options.db;
  const start = performance.now();
  const types = Object.keys(options.handlers);
  const summary: PoolSummary = {
    claimed: 0,
    done: 0,
    failed: 0,
    retried: 0,
    dead: 0,
    released: 0,
    recovered: 0,
    ms: 0,
  };
  const recoverEveryMs = options.recoverEveryMs ?? 5000;
  let lastRecovery = -Infinity;
  const recover = async () => {
    lastRecovery = performance.now();
    try {
      const recovered = await recoverExpiredJobs(db);
      summary.recovered += recovered; // (not `+= await`: other loops update it meanwhile)
    } catch (err) {
      log("job recovery failed", { error: String(err) });
    }
  };
  const claiming = () =>
    !options.stop?.aborted && !options.abort?.aborted &&
    (options.claimUntil === undefined || Date.now() < options.claimUntil);

  const loop = async (loopId: string) => {
    while (claiming()) {
      if (performance.now() - lastRecovery >= recoverEveryMs) await recover();
      let jobs: Job[];
      try {
        jobs = await claimJobs(loopId, options.batchSize ?? 1, types, db);
      } catch (err) {
        log("job claim failed", { worker: loopId, error: String(err) });
        if (options.pollMs === undefined) return;
        await idle(Math.max(options.pollMs, 1000), options);
        continue;
      }
      if (!jobs.length) {
        if (options.pollMs === undefined) return;
        await idle(options.pollMs, options);
        continue;
      }
      summary.claimed += jobs.length;
      for (const [i, job] of jobs.entries()) {
        if (i > 0 && !claiming()) {
          const released = await releaseJobs(jobs.slice(i).map((j) => j.id), loopId, db)
            .catch(() => 0); // else recovered after their lock timeout
          summary.released += released;
          break;
        }
        await runJob(job, loopId, options, db, summary);
      }
    }
  };

  await recover();
  await Promise.all(
    Array.from({ length: options.concurrency }, (_, i) => loop(`${options.workerId}/${i}`)),
  );
  summary.ms = Math.round(performance.now() - start);
  return summary;
}

/** Runs one claimed job and records its outcome. Never throws. */
async function runJob(
  job: Job,
  loopId: string,
  options: PoolOptions,
  db: Db,
  summary: PoolSummary,
): Promise<void> {
  const type = job.job_type;
  const timeoutMs = Math.max(
    1,
    Math.min(options.taskTimeoutMs, job.lock_timeout_s * 1000 - lockMarginMs),
  );
  const budget = new Budget(timeoutMs, options.abort);
  const start = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new DOMException(`the job exceeded its ${timeoutMs} ms timeout`, "TimeoutError");
      budget.abort(err);
      reject(err);
    }, timeoutMs);
  });
  const torn = new Promise<never>((_, reject) => {
    if (budget.aborted.aborted) reject(budget.aborted.reason);
    budget.aborted.addEventListener("abort", () => reject(budget.aborted.reason), { once: true });
  });
  try {
    // The handler may ignore its signal: the pool stops waiting for it anyway.
    await Promise.race([
      options.handlers[type](job, { signal: budget.aborted, budget, workerId: loopId }),
      deadline,
      torn,
    ]);
    const completed = await completeJobs([job.id], loopId, db);
    summary.done += completed;
    // 0: the lock expired and another worker owns the job now (it will re-run, idempotently).
    metrics.inc("jobs_processed_total", {
      job_type: type,
      outcome: completed ? "done" : "lost_lock",
    });
  } catch (err) {
    if (options.abort?.aborted) {
      // Torn down mid-task: hand the job back instead of counting a failure.
      const released = await releaseJobs([job.id], loopId, db).catch(() => 0);
      summary.released += released;
      metrics.inc("jobs_processed_total", { job_type: type, outcome: "released" });
      return;
    }
    const permanent = err instanceof PermanentJobError;
    const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    metrics.inc("jobs_failed_total", { job_type: type });
    try {
      const outcome = await failJob(job.id, loopId, message, { retry: !permanent }, db);
      if (outcome?.status === "failed") {
        summary.retried++;
        metrics.inc("jobs_retried_total", { job_type: type });
      } else if (outcome?.status === "dead") summary.dead++;
      if (outcome) {
        summary.failed++;
        metrics.inc("jobs_processed_total", {
          job_type: type,
          outcome: outcome.status === "dead" ? "dead" : "retry",
        });
      }
      log("job failed", {
        job_id: job.id,
        job_type: type,
        attempt: job.attempts,
        status: outcome?.status ?? "lost_lock",
        error: message,
      });
    } catch (dbErr) {
      // The lock will expire and the job will be recovered: never lost.
      log("recording a job failure failed", { job_id: job.id, error: String(dbErr) });
    }
  } finally {
    clearTimeout(timer);
    metrics.observe("job_duration_ms", { job_type: type }, performance.now() - start);
  }
}

/** Waits `ms` or until the pool is stopped. */
function idle(ms: number, options: PoolOptions): Promise<void> {
  const signals = [options.stop, options.abort].filter((s): s is AbortSignal => !!s);
  return delay(ms, signals.length ? AbortSignal.any(signals) : undefined).catch(() => {});
}

function log(msg: string, fields: Record<string, unknown>): void {
  console.error(JSON.stringify({ msg, ...fields }));
}
