/**
 * The job handlers a worker runs, by job type. `generate_reply` is only offered when
 * OpenAI is configured: without it, workers don't claim those jobs and they wait, pending
 * (visible in `queue_depth`), for a worker that can run them, instead of dying.
 *
 * @module
 */
import type { JobType } from "../../../shared/domain/jobs.ts";
import type { JobHandler } from "../../../shared/jobs/pool.ts";
import { openai } from "../../../shared/openai.ts";
import { sendDigest } from "./digest.ts";
import { generateReply } from "./generate_reply.ts";

/** Handlers available in this isolate, keyed by the job types of `shared/domain/jobs.ts`. */
export function jobHandlers(): { [T in JobType]?: JobHandler } {
  return {
    digest: sendDigest,
    ...(openai ? { generate_reply: generateReply } : {}),
  };
}
