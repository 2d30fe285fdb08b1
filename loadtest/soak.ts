/**
 * `soak`: steady load for a long time while sampling the server's own metrics
 * (`GET /functions/v1/health/metrics`, which needs a secret API key). From the settled start
 * to the end, over windows of RSS_WINDOW_S (180 s, longer than a GC cycle): the peak resident
 * memory must grow less than 5%, the floor of the V8 heap in use (what survives a collection)
 * less than 10%, and the app's open database connections may at most double: a leak of any
 * keeps growing. Reading the server's metrics instead of /proc works against any deployment,
 * not only a local process.
 *
 * Env: SOAK_RATE (50 iterations/s), DURATION_S (1800), USERS (500), WARMUP_S (60: seconds of
 * the same traffic before sampling starts, so a cold start's loading isn't counted as growth),
 * SECRET_KEY (a secret API key of the stack, `sb_secret_…`; else SMOKE_SECRET_KEY; else the
 * local stack's `.local/secret-key`). With WORKERS > 1 the samples follow the worker that
 * answered first.
 *
 * @module
 */
import type { Scenario } from "./lib/runner.ts";
import { auth, envNumber, type LoadUser, seededUsers } from "./lib/users.ts";

const baseUrl = (Deno.env.get("BASE_URL") ?? `http://127.0.0.1:${Deno.env.get("PORT") ?? 54321}`)
  .replace(/\/$/, "");

/** The secret key the metrics endpoint needs, or null (the thresholds then fail: no samples). */
function secretKey(): string | null {
  const fromEnv = Deno.env.get("SECRET_KEY") ?? Deno.env.get("SMOKE_SECRET_KEY");
  if (fromEnv) return fromEnv;
  try {
    return Deno.readTextFileSync(".local/secret-key").trim() || null;
  } catch {
    return null;
  }
}

/** One gauge's value in a Prometheus text exposition (unlabelled series), or null. */
export function gauge(text: string, name: string): number | null {
  const m = text.match(new RegExp(`^${name} (\\S+)$`, "m"));
  return m ? Number(m[1]) : null;
}

/**
 * Samplers reading the server's metrics. Every scrape answers for one serving process; the
 * first process seen is the one followed (its pid is in `process_pid`), so a scrape that
 * lands on another worker is retried, then skipped.
 */
export function metricsSamplers(): Record<string, () => Promise<number | null>> {
  const key = secretKey();
  let pid: number | null = null;
  let last: { at: number; text: Promise<string | null> } | null = null;
  const scrape = async (): Promise<string | null> => {
    if (!key) return null;
    for (let attempt = 0; attempt < 8; attempt++) {
      const res = await fetch(`${baseUrl}/functions/v1/health/metrics`, {
        headers: { apikey: key },
      });
      if (res.status !== 200) {
        await res.body?.cancel();
        throw new Error(`GET /health/metrics answered ${res.status}: is SECRET_KEY right?`);
      }
      const text = await res.text();
      const seen = gauge(text, "process_pid");
      pid ??= seen;
      if (seen === pid) return text;
    }
    return null;
  };
  // Both samplers read the same scrape (one request per second, not two).
  const text = () => {
    if (!last || performance.now() - last.at > 500) {
      last = { at: performance.now(), text: scrape() };
    }
    return last.text;
  };
  // RSS and the heap are sawtooths (they climb until V8 collects, then drop back), so one
  // sample says little. Judged over whole windows of `windowS` seconds (longer than a GC
  // cycle): RSS by its peak, which is what an isolate's memory limit meets and what a leak
  // raises cycle after cycle (its floor swings with what the allocator hands back to the
  // OS); the V8 heap by its floor, what survives a collection. No value before the first
  // window is full.
  const windowS = envNumber("RSS_WINDOW_S", 180);
  const mb = (name: string) => async () => {
    const bytes = gauge(await text() ?? "", name);
    return bytes === null ? null : bytes / 2 ** 20;
  };
  const windowed = (read: () => Promise<number | null>, pick: (values: number[]) => number) => {
    const recent: { at: number; mb: number }[] = [];
    let first: number | null = null;
    return async () => {
      const value = await read();
      if (value === null) return null;
      const now = performance.now();
      first ??= now;
      recent.push({ at: now, mb: value });
      while (recent[0].at < now - windowS * 1000) recent.shift();
      return now - first >= windowS * 1000 ? pick(recent.map((r) => r.mb)) : null;
    };
  };
  const peak = (values: number[]) => Math.max(...values);
  const floor = (values: number[]) => Math.min(...values);
  const rss = mb("process_resident_memory_bytes");
  const heap = mb("process_heap_used_bytes");
  return {
    server_rss_mb: rss,
    server_rss_peak_mb: windowed(rss, peak),
    server_heap_floor_mb: windowed(heap, floor),
    db_connections: async () => gauge(await text() ?? "", "db_connections_total_open"),
  };
}

const feedPath = (iteration: number) =>
  `/functions/v1/feed?kind=${iteration % 2 ? "following" : "for-you"}&limit=20`;

/**
 * The same traffic for `seconds` before the run (and its samplers) start, outside the run's
 * metrics: growth is measured from a settled start, not from a process that has yet to load
 * its functions and fill its caches.
 */
async function warmUp(users: LoadUser[], seconds: number, rate: number): Promise<void> {
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < seconds * rate; i++) {
    const res = fetch(baseUrl + feedPath(i), { headers: auth(users[i % users.length]) })
      .then((r) => r.body?.cancel()).catch(() => {});
    pending.push(res);
    await new Promise((r) => setTimeout(r, 1000 / rate)); // pacing a load generator
  }
  await Promise.all(pending);
}

export const scenario: Scenario<{ users: LoadUser[] }> = {
  name: "soak",
  setup: async () => {
    const users = await seededUsers(envNumber("USERS", 500));
    await warmUp(users, envNumber("WARMUP_S", 60), envNumber("SOAK_RATE", 50));
    return { users };
  },
  parts: {
    steady: {
      schedule: {
        executor: "constant-arrival-rate",
        rate: envNumber("SOAK_RATE", 50),
        durationS: envNumber("DURATION_S", 1800),
        maxVUs: 200,
      },
      exec: async ({ client, data, iteration }) => {
        const user = data.users[iteration % data.users.length];
        const r = await client.get(feedPath(iteration), {
          headers: auth(user),
          name: "feed",
        });
        client.check(r, { "feed 200": (x) => x.status === 200 });
      },
    },
  },
  thresholds: {
    "http_req_failed": ["rate<0.01"],
    "dropped_iterations": ["count==0"],
    // count: the samples exist at all (no secret key, no samples: the run fails, not passes).
    "sample_server_rss_peak_mb": ["count>=3", "growth<0.05"],
    "sample_server_heap_floor_mb": ["count>=3", "growth<0.1"],
    // Connections come and go with idle timeouts and a pool's size bounds them; a leak keeps
    // adding. The end may be at most twice the settled start.
    "sample_db_connections": ["count>=3", "growth<=1"],
  },
  samplers: metricsSamplers(),
};
