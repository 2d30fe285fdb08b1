/**
 * `mixed`: the everyday app at once — feeds, notifications, analytics events (202) and
 * thread summaries — at VUS (50) users with think time.
 *
 * Env: VUS (50), DURATION_S (120), USERS (= VUS), THINK_MS ("1000,5000"), RAMP_S (0: all VUS
 * start at once; else they arrive evenly over RAMP_S seconds first, as a crowd does).
 *
 * @module
 */
import type { Scenario } from "./lib/runner.ts";
import { serverSamplers } from "./lib/server.ts";
import { auth, envNumber, type LoadUser, seededUsers } from "./lib/users.ts";

interface Data {
  users: LoadUser[];
  postIds: string[];
}

const vus = envNumber("VUS", 50);
const rampS = envNumber("RAMP_S", 0);
const [thinkMin, thinkMax] = (Deno.env.get("THINK_MS") ?? "1000,5000").split(",").map(Number);

export const scenario: Scenario<Data> = {
  name: "mixed",
  setup: async (client) => {
    const users = await seededUsers(envNumber("USERS", vus));
    // Threads to read: the hottest posts of the moment.
    const page = await client.get("/functions/v1/feed?limit=50", {
      headers: auth(users[0]),
      name: "setup",
    });
    const postIds = page.json<{ items: { id: string }[] }>().items.map((p) => p.id);
    return { users, postIds };
  },
  parts: {
    users: {
      schedule: {
        executor: "ramping-vus",
        startVUs: rampS > 0 ? 0 : vus,
        stages: [
          ...(rampS > 0 ? [{ durationS: rampS, target: vus }] : []),
          { durationS: envNumber("DURATION_S", 120), target: vus },
        ],
        thinkTimeMs: [thinkMin, thinkMax],
      },
      exec: async ({ client, data, vu, iteration }) => {
        const user = data.users[vu % data.users.length];
        const h = auth(user);
        switch (iteration % 4) {
          case 0: {
            const r = await client.get("/functions/v1/feed?limit=20", { headers: h, name: "feed" });
            client.check(r, { "feed 200": (x) => x.status === 200 });
            break;
          }
          case 1: {
            const r = await client.get("/functions/v1/notifications?limit=20", {
              headers: h,
              name: "notifications",
            });
            client.check(r, { "notifications 200": (x) => x.status === 200 });
            break;
          }
          case 2: {
            const r = await client.post("/functions/v1/events", {
              events: [
                { name: "screen.view", properties: { screen: "feed" } },
                { name: "post.impression", properties: { position: iteration } },
              ],
            }, { headers: h, name: "events" });
            client.check(r, { "events 202": (x) => x.status === 202 });
            break;
          }
          default: {
            const postId = data.postIds[(vu + iteration) % data.postIds.length];
            const r = await client.get(`/functions/v1/thread-summary/${postId}`, {
              headers: h,
              name: "thread-summary",
            });
            client.check(r, { "thread-summary 200": (x) => x.status === 200 });
          }
        }
      },
    },
  },
  thresholds: {
    "http_req_duration": ["p(95)<500"],
    "http_req_failed": ["rate<0.01"],
    "checks": ["rate>0.99"],
  },
  samplers: serverSamplers(),
};
