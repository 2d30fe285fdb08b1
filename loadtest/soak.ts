/**
 * `soak`: steady load for a long time while sampling the server's resident memory (run with
 * SERVER_PID); RSS growth from the settled start to the end must stay under 5%.
 *
 * Env: SOAK_RATE (50 iterations/s), DURATION_S (1800), SERVER_PID (required for the RSS check).
 *
 * @module
 */
import type { Scenario } from "./lib/runner.ts";
import { serverSamplers } from "./lib/server.ts";
import { auth, envNumber, type LoadUser, seededUsers } from "./lib/users.ts";

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
    "sample_server_rss_mb": ["growth<0.05"],
  },
  samplers: serverSamplers(),
};
