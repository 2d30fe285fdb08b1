/**
 * The job types of this app: the registry that jobs-worker's handlers implement (a type
 * error there when one has no handler) and that queue metrics report (`queue_depth` has a
 * series per type, zeros included). Here, in `shared/domain/`, because health and
 * jobs-worker both need it and no function imports another.
 *
 * @module
 */
import { replyJobType } from "./reply_jobs.ts";

/** The daily digest job (scheduled by jobs-worker's `POST /digests`). */
export const digestJobType = "digest";

/** Every job type a worker may run. */
export const jobTypes = [replyJobType, digestJobType] as const;

/** One of {@link jobTypes}. */
export type JobType = (typeof jobTypes)[number];
