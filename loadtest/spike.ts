/**
 * `spike`: 0 → SPIKE_VUS (500) users in one minute reading feeds and profiles-heavy pages,
 * then back down. Errors < 1%.
 *
 * Env: SPIKE_VUS (500), RAMP_S (60), HOLD_S (30).
 *
 * @module
 */
import type { Scenario } from "./lib/runner.ts";
import { serverSamplers } from "./lib/server.ts";
import { auth, envNumber, type LoadUser, seededUsers } from "./lib/users.ts";

const target = envNumber("SPIKE_VUS", 500);

export const scenario: Scenario<{ users: LoadUser[] }> = {
  name: "spike",
  setup: async () => ({ users: await seededUsers(target) }),
  parts: {
    users: {
      schedule: {
        executor: "ramping-vus",
        stages: [
          { durationS: envNumber("RAMP_S", 60), target },
          { durationS: envNumber("HOLD_S", 30), target },
          { durationS: 10, target: 0 },
        ],
        thinkTimeMs: [500, 1500],
      },
      exec: async ({ client, data, vu, iteration }) => {
        const kind = iteration % 2 ? "following" : "for-you";
        const r = await client.get(`/functions/v1/feed?kind=${kind}&limit=20`, {
          headers: auth(data.users[vu % data.users.length]),
          name: `feed ${kind}`,
        });
        client.check(r, { "feed 200": (x) => x.status === 200 });
      },
    },
  },
  thresholds: {
    "http_req_failed": ["rate<0.01"],
    "http_req_duration": ["p(95)<1000"],
  },
  samplers: serverSamplers(),
};
