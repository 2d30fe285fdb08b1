/**
 * The job handlers a worker runs, by job type. `generate_reply` is only offered when
 * OpenAI is configured: without it, workers don't claim those jobs and they wait, pending
 * (visible in `queue_depth`), for a worker that can run them, instead of dying.
 *
 * @module
 */
import type { Deps } from "../../../shared/deps.ts";
import type { JobType } from "../../../shared/domain/jobs.ts";
import type { JobHandler } from "../../../shared/jobs/pool.ts";
import { digestHandler } from "./digest.ts";
import { generateReplyHandler } from "./generate_reply.ts";

/** What the handlers run on: the database, and OpenAI (for `generate_reply`). */
export type JobDeps = Pick<Deps, "db" | "openai">;

/**
 * Handlers running on `deps`, keyed by the job types of `shared/domain/jobs.ts`. Build them
 * once per worker (the jobs-worker app, `npm run worker`).
 */
export function jobHandlers(deps: JobDeps): { [T in JobType]?: JobHandler } {
  return {
    digest: digestHandler(deps.db),
    ...(deps.openai.models ? { generate_reply: generateReplyHandler(deps) } : {}),
  };
}
