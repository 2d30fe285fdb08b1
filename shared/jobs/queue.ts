/**
 * The jobs queue client: thin wrappers over the SQL RPCs of `20261125003100_jobs.sql`
 * (claim with `FOR UPDATE SKIP LOCKED`, complete, fail with backoff, release, recover).
 * Generic, as graphile-worker's: a job's targets live in its payload, and an optional job
 * key allows one active job per key (`20261128000500_jobs_job_key.sql`).
 * Everything runs as the database owner on the pool (or the client passed in): the API
 * roles cannot reach the jobs table.
 *
 * @module
 */
import type postgres from "postgres";

/** Where a job is in its life. */
export type JobStatus = "pending" | "processing" | "done" | "failed" | "dead";

/** A row of `public.jobs`. */
export interface Job {
  id: string;
  job_type: string;
  payload: Record<string, unknown>;
  status: JobStatus;
  attempts: number;
  max_attempts: number;
  lock_timeout_s: number;
  available_at: Date;
  locked_at: Date | null;
  locked_by: string | null;
  last_error: string | null;
  dedupe_key: string | null;
  job_key: string | null;
  created_at: Date;
}

/** A job to enqueue. */
export interface NewJob {
  type: string;
  payload?: Record<string, unknown>;
  maxAttempts?: number;
  /** Seconds after which a processing job is presumed lost (default 60). */
  lockTimeoutS?: number;
  availableAt?: Date;
  /** At most one job per key, ever. */
  dedupeKey?: string;
  /** At most one active (pending, processing, failed) job per key, as graphile-worker's. */
  jobKey?: string;
}

/** A database client: the isolate's pool (`deps.db.sql`), or another postgres.js client. */
export type Db = postgres.Sql;

/**
 * Enqueues a job. When a unique guard already holds an equivalent job (same dedupe key, or
 * an active job with the same job key), returns that job with `created: false` instead of
 * adding a second one.
 */
export async function enqueue(
  job: NewJob,
  db: Db,
): Promise<{ id: string; created: boolean; status: JobStatus }> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const [row] = await db<{ id: string; status: JobStatus }[]>`
      insert into public.jobs
        (job_type, payload, max_attempts, lock_timeout_s, available_at, dedupe_key, job_key)
      values (
        ${job.type}, ${db.json((job.payload ?? {}) as postgres.JSONValue)}, ${job.maxAttempts ?? 5},
        ${job.lockTimeoutS ?? 60}, coalesce(${
      job.availableAt?.toISOString() ?? null
    }::timestamptz, now()),
        ${job.dedupeKey ?? null}, ${job.jobKey ?? null})
      on conflict do nothing
      returning id, status`;
    if (row) return { ...row, created: true };
    const [existing] = await db<{ id: string; status: JobStatus }[]>`
      select id, status from public.jobs
      where (${job.dedupeKey ?? null}::text is not null and dedupe_key = ${job.dedupeKey ?? null})
         or (${job.jobKey ?? null}::text is not null and job_key = ${job.jobKey ?? null}
             and status in ('pending', 'processing', 'failed'))
      limit 1`;
    // Gone between the two statements (finished): try the insert again.
    if (existing) return { ...existing, created: false };
  }
  throw new Error(`could not enqueue ${job.type}: its guard keeps changing`);
}

/** Claims up to `n` runnable jobs of `types` (any type when omitted) for `workerId`. */
export function claimJobs(
  workerId: string,
  n: number,
  types: readonly string[] | null = null,
  db: Db,
): Promise<Job[]> {
  return db<Job[]>`select * from public.claim_jobs(${workerId}, ${n}, ${
    types ? [...types] : null
  }::text[])`;
}

/** Marks jobs done; returns how many `workerId` still held. */
export async function completeJobs(ids: string[], workerId: string, db: Db) {
  const [{ n }] = await db<{ n: number }[]>`
    select public.complete_jobs(${ids}::uuid[], ${workerId}) as n`;
  return n;
}

/** The outcome of a failed attempt. */
export interface FailOutcome {
  status: "failed" | "dead";
  attempts: number;
  available_at: Date;
  /** Seconds until the retry (negative or zero when dead). */
  delay_s: number;
}

/**
 * Records a failed attempt: retried after a backoff (30 s doubling to 10 min, ±20% jitter)
 * or dead after `max_attempts` or when `retry` is false. null when `workerId` no longer
 * held the job (its lock expired and it was recovered).
 */
export async function failJob(
  id: string,
  workerId: string,
  error: string,
  options: { retry?: boolean } = {},
  db: Db,
): Promise<FailOutcome | null> {
  const [row] = await db<FailOutcome[]>`
    select * from public.fail_job(${id}, ${workerId}, ${error}, ${options.retry ?? true})`;
  return row ?? null;
}

/** Hands jobs back (shutdown) without counting the attempt; returns how many. */
export async function releaseJobs(ids: string[], workerId: string, db: Db) {
  if (!ids.length) return 0;
  const [{ n }] = await db<{ n: number }[]>`
    select public.release_jobs(${ids}::uuid[], ${workerId}) as n`;
  return n;
}

/** Recovers jobs whose worker vanished (lock older than their timeout); returns how many. */
export async function recoverExpiredJobs(db: Db): Promise<number> {
  const [{ n }] = await db<{ n: number }[]>`select public.recover_expired_jobs() as n`;
  return n;
}
