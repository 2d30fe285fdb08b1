/**
 * `npm run bench:queue`: throughput of the claim → complete loop with no-op jobs, on a
 * fresh migrated database (a copy made on DATABASE_URL's server, dropped afterwards).
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:queue -- [--jobs 20000] [--loops 4]
 *
 * For batch sizes 1 and 10: enqueue N jobs in one statement, then `--loops` concurrent loops
 * (one connection each) claim a batch with claim_jobs (FOR UPDATE SKIP LOCKED) and complete
 * it with complete_jobs until the queue is empty. Prints jobs/s per batch size.
 *
 * @module
 */
import postgres from "postgres";
import { claimJobs, completeJobs } from "../../shared/jobs/queue.ts";
import { testDatabase } from "../testing/test_db.ts";

function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
}
const jobs = flag("jobs", 20_000);
const loops = flag("loops", 4);

await using db = await testDatabase();

const client = postgres(db.url, { max: loops, prepare: false, onnotice: () => {} });
const rows: { batch: number; jobs: number; loops: number; seconds: number; jobsPerS: number }[] =
  [];
try {
  for (const batch of [1, 10]) {
    await client`truncate public.jobs`;
    await client`insert into public.jobs (job_type) select 'noop' from generate_series(1, ${jobs})`;
    await client`vacuum analyze public.jobs`;
    let done = 0;
    const start = performance.now();
    await Promise.all(Array.from({ length: loops }, async (_, i) => {
      const worker = `bench-${i}`;
      for (;;) {
        const claimed = await claimJobs(worker, batch, ["noop"], client);
        if (!claimed.length) return;
        const completed = await completeJobs(claimed.map((j) => j.id), worker, client);
        done += completed; // not `done += await …`: that reads `done` before the await
      }
    }));
    const seconds = (performance.now() - start) / 1000;
    if (done !== jobs) throw new Error(`completed ${done} of ${jobs}`);
    rows.push({ batch, jobs, loops, seconds, jobsPerS: jobs / seconds });
  }
} finally {
  await client.end();
}

const [{ version }] = await db.sql`select current_setting('server_version') as version`;
console.log(
  `claim → complete, no-op jobs, Postgres ${version}, ${navigator.hardwareConcurrency} CPUs`,
);
console.log("| batch | jobs | loops | seconds | jobs/s |");
console.log("| ----- | ---- | ----- | ------- | ------ |");
for (const r of rows) {
  console.log(
    `| ${r.batch} | ${r.jobs} | ${r.loops} | ${r.seconds.toFixed(2)} | ${Math.round(r.jobsPerS)} |`,
  );
}
