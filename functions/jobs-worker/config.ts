/**
 * `jobs-worker`'s own settings (the shared ones are `deps.config`). `npm run worker`
 * (scripts/dev/worker.ts) reads the same ones.
 *
 * @module
 */
import { type Env, int, section } from "../../shared/config.ts";

/** `jobs-worker`'s settings of `env`. Throws an Error naming every bad variable. */
export function jobsWorkerConfig(env: Env) {
  const e = section(env, {
    /** Concurrent handlers per worker (jobs-worker run, `npm run worker` loops). */
    JOBS_CONCURRENCY: int(4),
    /** Per task; capped below each job's lock timeout. */
    JOBS_TASK_TIMEOUT_MS: int(15_000),
    /** Wall clock of one `jobs-worker/run` call; claiming stops a task timeout before it. */
    JOBS_RUN_BUDGET_MS: int(60_000),
    /** `jobs-worker` runs and digest schedulings per secret key a minute. */
    JOBS_RUN_RATE_LIMIT_PER_MIN: int(60),
  });
  return {
    concurrency: e.JOBS_CONCURRENCY,
    taskTimeoutMs: e.JOBS_TASK_TIMEOUT_MS,
    runBudgetMs: e.JOBS_RUN_BUDGET_MS,
    runsPerMin: e.JOBS_RUN_RATE_LIMIT_PER_MIN,
  };
}

/** What {@link jobsWorkerConfig} returns. */
export type JobsWorkerConfig = ReturnType<typeof jobsWorkerConfig>;
