/**
 * `smoke`: every endpoint once, as an app would call it; all checks must pass with zero
 * errors. Runs in `npm test` against a freshly started stack.
 *
 * @module
 */
import type { LoadClient, LoadResponse } from "./lib/client.ts";
import type { Scenario } from "./lib/runner.ts";
import { auth, type LoadUser, seededUsers } from "./lib/users.ts";

interface Data {
  user: LoadUser;
}

/** One call and its checks. */
async function expect(
  client: LoadClient,
  name: string,
  call: Promise<LoadResponse>,
  status: number,
  more: Record<string, (r: LoadResponse) => boolean> = {},
): Promise<LoadResponse> {
  const res = await call;
  client.check(res, {
    [`${name}: ${status}`]: (r) => r.status === status,
    [`${name}: x-request-id`]: (r) => !!r.headers.get("x-request-id"),
    ...Object.fromEntries(Object.entries(more).map(([k, f]) => [`${name}: ${k}`, f])),
  });
  return res;
}

export const scenario: Scenario<Data> = {
  name: "smoke",
  setup: async () => ({ user: (await seededUsers(1))[0] }),
  parts: {
    everyEndpoint: {
      schedule: { executor: "constant-arrival-rate", rate: 1, durationS: 1, maxVUs: 1 },
      exec: async ({ client, data: { user } }) => {
        const h = auth(user);
        const v1 = "/functions/v1";
        await expect(client, "health", client.get(`${v1}/health`), 200, {
          "db and redis ok": (r) => r.json<{ status: string }>().status === "ok",
        });
        await expect(client, "metrics", client.get(`${v1}/health/metrics`), 200, {
          "prometheus text": (r) => r.body.includes("# TYPE"),
        });
        const feed = await expect(
          client,
          "feed for-you",
          client.get(`${v1}/feed?limit=5`, { headers: h }),
          200,
          {
            "has posts": (r) => r.json<{ items: unknown[] }>().items.length > 0,
            "server-timing": (r) => /db;dur=/.test(r.headers.get("server-timing") ?? ""),
          },
        );
        const { next_cursor } = feed.json<{ next_cursor: string }>();
        await expect(
          client,
          "feed page 2",
          client.get(`${v1}/feed?limit=5&cursor=${next_cursor}`, { headers: h }),
          200,
        );
        await expect(
          client,
          "feed following",
          client.get(`${v1}/feed?kind=following&limit=5`, { headers: h }),
          200,
        );
        await expect(
          client,
          "feed without token",
          client.get(`${v1}/feed`, { expected: [401] }),
          401,
        );
        await expect(
          client,
          "feed bad limit",
          client.get(`${v1}/feed?limit=abc`, { headers: h, expected: [400] }),
          400,
          {
            "problem+json": (r) => r.headers.get("content-type") === "application/problem+json",
          },
        );
      },
    },
  },
  thresholds: {
    "checks": ["rate==1"],
    "http_req_failed": ["rate==0"],
  },
};
