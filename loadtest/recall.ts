/**
 * `recall`: the expensive feature under a crowd. Normal users ramp to 1k, then 5k, hold
 * PEAK_VUS (10k) and ramp down, each resolving now and then and reading their threads, with
 * 1–5 s think time; a few deliberately abusive users hammer `recall-resolve`, and their 429s
 * (with Retry-After) are the expected result.
 *
 * Env: PEAK_VUS (10000), STAGE_S (60: each ramp/hold stage), USERS (= PEAK_VUS),
 * ABUSIVE_VUS (20), RESOLVE_SHARE (0.2 of iterations resolve).
 *
 * @module
 */
import type { Scenario } from "./lib/runner.ts";
import { recallQuery } from "./lib/queries.ts";
import { serverSamplers } from "./lib/server.ts";
import { auth, envNumber, type LoadUser, seededUsers } from "./lib/users.ts";

interface Data {
  users: LoadUser[];
  abusers: LoadUser[];
}

const peak = envNumber("PEAK_VUS", 10_000);
const stageS = envNumber("STAGE_S", 60);
const abusive = envNumber("ABUSIVE_VUS", 20);
const resolveShare = envNumber("RESOLVE_SHARE", 0.2);

export const scenario: Scenario<Data> = {
  name: "recall",
  setup: async () => {
    const all = await seededUsers(envNumber("USERS", peak) + abusive);
    return { users: all.slice(0, all.length - abusive), abusers: all.slice(all.length - abusive) };
  },
  parts: {
    users: {
      schedule: {
        executor: "ramping-vus",
        stages: [
          { durationS: stageS, target: Math.min(1000, peak) },
          { durationS: stageS, target: Math.min(5000, peak) },
          { durationS: stageS, target: peak },
          { durationS: stageS * 2, target: peak },
          { durationS: stageS, target: 0 },
        ],
        thinkTimeMs: [1000, 5000],
      },
      exec: async ({ client, data, vu, iteration }) => {
        const user = data.users[vu % data.users.length];
        if (Math.random() < resolveShare) {
          const res = await client.post("/functions/v1/recall-resolve", {
            text: recallQuery(vu * 7 + iteration),
          }, { headers: auth(user), name: "recall-resolve" });
          client.check(res, {
            "resolve 200": (r) => r.status === 200,
            "resolve has candidates": (r) =>
              Array.isArray(r.json<{ candidates: unknown[] }>().candidates),
          });
        } else {
          const res = await client.get("/functions/v1/recall/threads?limit=20", {
            headers: auth(user),
            name: "recall threads",
          });
          client.check(res, { "threads 200": (r) => r.status === 200 });
        }
      },
    },
    abusers: {
      schedule: {
        executor: "ramping-vus",
        startVUs: abusive,
        stages: [{ durationS: stageS * 6, target: abusive }],
        thinkTimeMs: [50, 150],
      },
      exec: async ({ client, data, vu, iteration }) => {
        const user = data.abusers[vu % data.abusers.length];
        const res = await client.post("/functions/v1/recall-resolve", {
          text: recallQuery(iteration),
        }, { headers: auth(user), name: "recall-resolve abusive", expected: [200, 429] });
        client.check(res, {
          "abusive: 200 or 429": (r) => r.status === 200 || r.status === 429,
          "429 carries Retry-After": (r) =>
            r.status !== 429 || Number(r.headers.get("retry-after")) >= 1,
        });
      },
    },
  },
  thresholds: {
    "http_req_duration{name:recall-resolve}": ["p(95)<2000"],
    "http_req_duration{name:recall threads}": ["p(95)<2000"],
    "http_req_failed": ["rate<0.01"],
    "checks{name:429 carries Retry-After}": ["rate==1"],
    "status_429": ["count>0"],
  },
  samplers: serverSamplers(),
};
