/**
 * `feed`: users paging through their feeds (for-you and following) at a fixed arrival rate.
 * Thresholds: p95 < 500 ms, errors < 1%, every page has posts, no dropped iterations.
 *
 * Env: FEED_RATE (iterations/s, default 100), DURATION_S (default 300), MAX_VUS (default 100),
 * USERS (default 1000).
 *
 * @module
 */
import type { LoadClient, LoadResponse } from "./lib/client.ts";
import type { Scenario } from "./lib/runner.ts";
import { auth, envNumber, type LoadUser, seededUsers } from "./lib/users.ts";

interface Data {
  users: LoadUser[];
}

export const scenario: Scenario<Data> = {
  name: "feed",
  setup: async () => ({ users: await seededUsers(envNumber("USERS", 1000)) }),
  parts: {
    readers: {
      schedule: {
        executor: "constant-arrival-rate",
        rate: envNumber("FEED_RATE", 100),
        durationS: envNumber("DURATION_S", 300),
        maxVUs: envNumber("MAX_VUS", 100),
      },
      exec: async ({ client, data: { users }, iteration: i }) => {
        const user = users[Math.floor(Math.random() * users.length)];
        const kind = i % 3 === 0 ? "following" : "for-you";
        const first = await client.get(`/functions/v1/feed?kind=${kind}&limit=20`, {
          headers: auth(user),
          name: `feed ${kind}`,
        });
        const page = checkPage(client, first);
        // A third of the readers scroll on to the next page.
        if (page?.next_cursor && i % 3 !== 2) {
          checkPage(
            client,
            await client.get(
              `/functions/v1/feed?kind=${kind}&limit=20&cursor=${page.next_cursor}`,
              {
                headers: auth(user),
                name: `feed ${kind} page 2`,
              },
            ),
          );
        }
      },
    },
  },
  thresholds: {
    "http_req_duration": ["p(95)<500"],
    "http_req_failed": ["rate<0.01"],
    "checks": ["rate>0.99"],
    "dropped_iterations": ["count==0"],
  },
};

function checkPage(
  client: LoadClient,
  res: LoadResponse,
): { items: unknown[]; next_cursor: string | null } | null {
  let page: { items: unknown[]; next_cursor: string | null } | null = null;
  client.check(res, {
    "feed 200": (r) => r.status === 200,
    "feed page has posts": (r) => {
      page = r.json();
      return page!.items.length > 0;
    },
  });
  return page;
}
