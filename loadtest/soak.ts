/**
 * `soak`: steady load for a long time while sampling the server's own metrics
 * (`GET /functions/v1/health/metrics`, which needs a secret API key): resident memory must
 * grow less than 5% from the settled start to the end, and the app's open database
 * connections must not grow (a leak of either shows here). Reading the server's metrics
 * instead of /proc works against any deployment, not only a local process.
 *
 * Env: SOAK_RATE (50 iterations/s), DURATION_S (1800), USERS (500), SECRET_KEY (a secret API
 * key of the stack, `sb_secret_…`; else SMOKE_SECRET_KEY; else the local stack's
 * `.local/secret-key`). With WORKERS > 1 the samples follow the worker that answered first.
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
  return {
    server_rss_mb: async () => {
      const bytes = gauge(await text() ?? "", "process_resident_memory_bytes");
      return bytes === null ? null : bytes / 2 ** 20;
    },
    db_connections: async () => gauge(await text() ?? "", "db_connections_total_open"),
  };
}

export const scenario: Scenario<{ users: LoadUser[] }> = {
  name: "soak",
  setup: async () => ({ users: await seededUsers(envNumber("USERS", 500)) }),
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
        const kind = iteration % 2 ? "following" : "for-you";
        const r = await client.get(`/functions/v1/feed?kind=${kind}&limit=20`, {
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
    "sample_server_rss_mb": ["count>=3", "growth<0.05"],
    // Connections come and go with idle timeouts and a pool's size bounds them; a leak keeps
    // adding. The end may be at most twice the settled start.
    "sample_db_connections": ["count>=3", "growth<=1"],
  },
  samplers: metricsSamplers(),
};
