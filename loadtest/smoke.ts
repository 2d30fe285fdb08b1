/**
 * `smoke`: every endpoint once, as an app would call it; all checks must pass with zero
 * errors. Runs in `npm test` against a freshly started stack. `jobs-worker` needs a secret
 * key: SMOKE_SECRET_KEY (one of the stack's SUPABASE_SECRET_KEYS).
 *
 * @module
 */
import type { LoadClient, LoadResponse } from "./lib/client.ts";
import type { Scenario } from "./lib/runner.ts";
import { auth, type LoadUser, seededUsers } from "./lib/users.ts";

interface Data {
  user: LoadUser;
  other: LoadUser;
}

/** One call and its checks (status, request id, and `more`). */
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

const problem = (r: LoadResponse) => r.headers.get("content-type") === "application/problem+json";
const v1 = "/functions/v1";

export const scenario: Scenario<Data> = {
  name: "smoke",
  setup: async () => {
    const [user, other] = await seededUsers(2);
    return { user, other };
  },
  parts: {
    everyEndpoint: {
      schedule: { executor: "constant-arrival-rate", rate: 1, durationS: 1, maxVUs: 1 },
      exec: async ({ client, data: { user, other } }) => {
        const h = auth(user);
        const get = (path: string, expected?: number[]) =>
          client.get(`${v1}${path}`, { headers: h, expected });
        const send = (method: string, path: string, body: unknown) =>
          client.request(method, `${v1}${path}`, {
            headers: { ...h, "content-type": "application/json" },
            body: JSON.stringify(body),
          });

        // health
        await expect(client, "health", client.get(`${v1}/health`), 200, {
          "db and redis ok": (r) => r.json<{ status: string }>().status === "ok",
        });
        // metrics: the secret key's, like jobs-worker's
        await expect(
          client,
          "metrics without key",
          client.get(`${v1}/health/metrics`, { expected: [401] }),
          401,
          { "problem+json": problem },
        );
        const secretKey = Deno.env.get("SMOKE_SECRET_KEY");
        if (secretKey) {
          await expect(
            client,
            "metrics",
            client.get(`${v1}/health/metrics`, { headers: { apikey: secretKey } }),
            200,
            {
              "prometheus text": (r) => r.body.includes("# TYPE"),
              "rss and db connections": (r) =>
                /^process_resident_memory_bytes \d+/m.test(r.body) &&
                /^db_connections_total_open \d+/m.test(r.body),
            },
          );
        }

        // feed
        const feed = await expect(client, "feed for-you", get("/feed?limit=5"), 200, {
          "has posts": (r) => r.json<{ items: unknown[] }>().items.length > 0,
          "server-timing": (r) => /db;dur=/.test(r.headers.get("server-timing") ?? ""),
        });
        const { items: hot, next_cursor } = feed.json<
          { items: { id: string }[]; next_cursor: string }
        >();
        await expect(client, "feed page 2", get(`/feed?limit=5&cursor=${next_cursor}`), 200);
        await expect(client, "feed following", get("/feed?kind=following&limit=5"), 200);
        await expect(
          client,
          "feed without token",
          client.get(`${v1}/feed`, { expected: [401] }),
          401,
        );
        await expect(client, "feed bad limit", get("/feed?limit=abc", [400]), 400, {
          "problem+json": problem,
        });

        // profiles
        await expect(client, "profile", get(`/profiles/${other.id}`), 200);
        await expect(client, "profiles batch", get(`/profiles?ids=${user.id},${other.id}`), 200, {
          "both, in order": (r) =>
            r.json<{ items: { id: string }[] }>().items.map((p) => p.id).join() ===
              `${user.id},${other.id}`,
        });
        await expect(client, "profile search", get("/profiles/search?q=user_00&limit=5"), 200);
        await expect(client, "followers", get(`/profiles/${other.id}/followers`), 200);
        await expect(client, "following", get(`/profiles/${user.id}/following`), 200);
        await expect(client, "follow", send("PUT", `/profiles/${other.id}/follow`, {}), 200);
        await expect(client, "unfollow", send("DELETE", `/profiles/${other.id}/follow`, {}), 200);
        await expect(
          client,
          "edit profile",
          send("PATCH", "/profiles/me", { bio: "smoke test" }),
          200,
        );

        // posts
        const created = await expect(
          client,
          "create post",
          send("POST", "/posts", { body: "smoke test post" }),
          201,
        );
        const postId = created.json<{ id: string }>().id;
        await expect(client, "read post", get(`/posts/${postId}`), 200);
        await expect(
          client,
          "reply",
          send("POST", `/posts/${postId}/replies`, { body: "smoke reply" }),
          201,
        );
        await expect(client, "replies", get(`/posts/${postId}/replies`), 200);
        await expect(
          client,
          "likes",
          send("POST", "/posts/likes", { like: [hot[0].id], unlike: [hot[1].id] }),
          200,
        );
        const personas = ["00000000-0000-4000-a000-000000000001"];
        await expect(
          client,
          "generate replies",
          send("POST", `/posts/${postId}/generate-replies`, { persona_ids: personas }),
          202,
        );
        await expect(client, "thread summary", get(`/thread-summary/${postId}`), 200, {
          "has a summary": (r) =>
            typeof r.json<{ summary: { text: string } }>().summary.text === "string",
        });

        // recall
        const resolved = await expect(
          client,
          "recall-resolve",
          send("POST", "/recall-resolve", { text: "a dreamy synth song about neon lights" }),
          200,
          { "answer shape": (r) => Array.isArray(r.json<{ candidates: unknown[] }>().candidates) },
        );
        const threadId = resolved.json<{ thread_id: string }>().thread_id;
        await expect(client, "recall threads", get("/recall/threads"), 200);
        await expect(client, "recall thread", get(`/recall/threads/${threadId}`), 200);
        await expect(client, "recall messages", get(`/recall/threads/${threadId}/messages`), 200, {
          "two messages": (r) => r.json<{ items: unknown[] }>().items.length === 2,
        });

        // events and notifications
        await expect(
          client,
          "events",
          send("POST", "/events", { events: [{ name: "smoke.test" }] }),
          202,
        );
        await expect(
          client,
          "anonymous events",
          client.post(`${v1}/events`, { events: [{ name: "smoke.anonymous" }] }),
          202,
        );
        await expect(client, "notifications", get("/notifications"), 200);
        await expect(
          client,
          "read notifications",
          send("POST", "/notifications/read", { all: true }),
          200,
        );

        // jobs-worker (a cron's secret key)
        const secret = Deno.env.get("SMOKE_SECRET_KEY");
        await expect(
          client,
          "jobs-worker without key",
          client.post(`${v1}/jobs-worker/run`, {}, { expected: [401] }),
          401,
        );
        if (secret) {
          await expect(
            client,
            "jobs-worker run",
            client.post(`${v1}/jobs-worker/run`, {}, { headers: { apikey: secret } }),
            200,
          );
        }
      },
    },
  },
  thresholds: {
    "checks": ["rate==1"],
    "http_req_failed": ["rate==0"],
  },
};
