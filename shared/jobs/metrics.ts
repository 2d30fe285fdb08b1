/**
 * Queue metrics: `queue_depth{job_type,status}` for the active states (pending, processing,
 * failed-awaiting-retry), read by one grouped count that the partial indexes of the claim
 * and recovery paths answer, cached briefly so frequent scrapes cost one query per window.
 * Finished rows (done, dead) are history, not depth, and are not counted.
 *
 * @module
 */
import type { Database } from "../data/db.ts";
import { metrics, type Sample } from "../http/metrics.ts";

metrics.describe("jobs_processed_total", "Job attempts finished, by job_type and outcome");
metrics.describe("jobs_failed_total", "Job attempts that threw or timed out, by job_type");
metrics.describe("jobs_retried_total", "Failed attempts scheduled for a retry, by job_type");
metrics.describe("job_duration_ms", "Handler run time per attempt, by job_type");

const activeStatuses = ["pending", "processing", "failed"];
/**
 * Registers the `queue_depth` collector (one per isolate: a later call replaces it), reading
 * through `db`. `jobTypes` (the caller's job registry) get a zero series each even before
 * their first job.
 */
export function collectQueueDepth(
  db: Database,
  jobTypes: readonly string[],
  cacheMs = 5000,
): void {
  let cached: { at: number; samples: Promise<Sample[]> } | null = null;
  metrics.collect(() => {
    if (!cached || performance.now() - cached.at > cacheMs) {
      const samples = queueDepth(db, jobTypes);
      cached = { at: performance.now(), samples };
      samples.catch(() => (cached = null)); // don't cache a failure
    }
    return cached.samples;
  }, "queue_depth");
}

async function queueDepth(db: Database, jobTypes: readonly string[]): Promise<Sample[]> {
  // Through the isolate's pool gate (a scrape waits at most 2 s for a connection, then the
  // collector reports nothing): metrics can't take connections request work needs.
  const rows = await db.query(
    db.sql<{ job_type: string; status: string; n: number }[]>`
    select job_type, status, count(*)::int as n
    from public.jobs
    where status in ('pending', 'processing', 'failed')
    group by job_type, status`,
    AbortSignal.timeout(2000),
  );
  // Zeros too: an empty queue is a value (and the series exists before the first job).
  const depth = new Map<string, number>();
  for (const type of jobTypes) {
    for (const status of activeStatuses) depth.set(`${type}\t${status}`, 0);
  }
  for (const r of rows) depth.set(`${r.job_type}\t${r.status}`, r.n);
  return [...depth].map(([key, value]) => {
    const [job_type, status] = key.split("\t");
    return {
      name: "queue_depth",
      help: "Jobs waiting or running, by job_type and status (pending, processing, failed)",
      type: "gauge" as const,
      labels: { job_type, status },
      value,
    };
  });
}
