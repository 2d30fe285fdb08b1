import { assert, assertEquals, assertMatch } from "../../scripts/testing/assert.ts";
import { createDevKeys } from "../../scripts/dev/dev_auth.ts";
import { assertProblem } from "../../scripts/testing/test_http.ts";
import { unitDeps } from "../../scripts/testing/unit_env.ts";
import { createFunctionApp } from "./app.ts";
import { ProblemError, toProblem } from "./problem.ts";

// Real keys, a fixed limit of 40 (floor = ceiling, so the test knows where overload starts),
// the default caps, a short body deadline.
const keys = await createDevKeys();
const deps = unitDeps({
  SUPABASE_JWKS: JSON.stringify(keys.jwks),
  MAX_IN_FLIGHT: "40",
  MIN_IN_FLIGHT: "40",
  USER_MAX_IN_FLIGHT: "16",
  ANON_IP_MAX_IN_FLIGHT: "32",
  BODY_READ_TIMEOUT_MS: "300",
  BODY_IDLE_TIMEOUT_MS: "2000",
  BODY_MIN_BYTES_PER_S: "65536",
  BODY_BUFFER_MAX_BYTES: "1500000",
});
const { admission, bodyBudget } = deps;

const origin = { origin: "https://app.rockout.example" };
const alice = await keys.mint("00000000-0000-4000-8000-00000000000a");
const bob = await keys.mint("00000000-0000-4000-8000-00000000000b");
const carol = await keys.mint("00000000-0000-4000-8000-00000000000c");
const dave = await keys.mint("00000000-0000-4000-8000-00000000000d");

/** An app whose `/block` route holds its slot until `release()`. */
function blockingApp() {
  const app = createFunctionApp("t", deps);
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  app.get("/block", async (c) => {
    await gate;
    return c.text("ok");
  });
  app.patch("/body", async (c) => c.json({ bytes: (await c.req.arrayBuffer()).byteLength }));
  const get = (token?: string) =>
    app.request("/t/block", {
      headers: { ...origin, ...(token ? { authorization: `Bearer ${token}` } : {}) },
    });
  return { app, get, release };
}

/** Yields until `n` requests hold a slot (they get there through a few awaits). */
async function untilInFlight(n: number) {
  for (let i = 0; i < 1000 && admission.inFlight < n; i++) {
    await new Promise((r) => setTimeout(r, 0));
  }
  assertEquals(admission.inFlight, n);
}

Deno.test("one user holds at most 16 slots: the 17th..24th get 429 in-flight + Retry-After + CORS, others get in", async () => {
  const { get, release } = blockingApp();
  const held = Array.from({ length: 16 }, () => get(alice));
  await untilInFlight(16);
  for (let i = 17; i <= 24; i++) {
    const refused = await get(alice);
    await assertProblem(refused.clone(), 429, "at most 16");
    assertEquals((await refused.json()).policy, "in-flight");
    assertEquals(refused.headers.get("retry-after"), "1");
    assertEquals(refused.headers.get("access-control-allow-origin"), "*");
  }
  // another user, and an anonymous caller, are admitted meanwhile
  const others = [get(bob), get()];
  await untilInFlight(18);
  release();
  assertEquals((await Promise.all([...held, ...others])).map((r) => r.status), Array(18).fill(200));
  assertEquals(admission.inFlight, 0);
});

Deno.test("past the isolate's limit any caller gets 503 with Retry-After and CORS, then it recovers", async () => {
  const { get, release } = blockingApp();
  const held = [...Array(16)].flatMap(() => [get(alice), get(bob)]);
  held.push(...Array.from({ length: 8 }, () => get(carol)));
  await untilInFlight(40);
  const refused = await get(dave);
  await assertProblem(refused, 503, "capacity");
  assertEquals(refused.headers.get("retry-after"), "1");
  assertEquals(refused.headers.get("access-control-allow-origin"), "*");
  release();
  assertEquals((await Promise.all(held)).every((r) => r.status === 200), true);
  assertEquals((await get(dave)).status, 200);
});

/**
 * A body stream that sends `first` and then stalls; `reading` resolves when the server asks for
 * more after it (the body is being read), `pulls` counts what was asked for.
 */
function stallingBody(first = new Uint8Array([123])) {
  const stats = { pulls: 0, cancelled: false };
  let reading!: () => void;
  const waiting = new Promise<void>((r) => reading = r);
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (stats.pulls++ === 0) c.enqueue(first);
      else {
        reading();
        return new Promise(() => {}); // stalls
      }
    },
    cancel() {
      stats.cancelled = true;
    },
  }, { highWaterMark: 0 });
  return { stream, stats, waiting };
}

Deno.test("a stalled body of a declared 1,000,000 bytes gets 408 + CORS after the grace and holds no work slot", async () => {
  const { app } = blockingApp();
  const { stream, stats, waiting } = stallingBody();
  const start = performance.now();
  const pending = app.request("/t/body", {
    method: "PATCH",
    body: stream,
    headers: { ...origin, authorization: `Bearer ${alice}`, "content-length": "1000000" },
  });
  await waiting; // the body is being read: the caller's hold is taken, no work slot
  assertEquals(admission.inFlight, 0);
  assertEquals(admission.held("user:00000000-0000-4000-8000-00000000000a"), 1);
  const res = await pending;
  const ms = performance.now() - start;
  await assertProblem(res, 408, "did not arrive in time");
  assertEquals(res.headers.get("access-control-allow-origin"), "*");
  // grace 300 ms (the old deadline was 300 ms + 1,000,000 B / rate = 15 s at 64 KiB/s)
  assert(ms >= 290 && ms < 5000, `answered after ${ms} ms`);
  assert(stats.cancelled, "the body stream was cancelled");
  assertEquals(admission.held("user:00000000-0000-4000-8000-00000000000a"), 0);
  assertEquals(bodyBudget.used, 0);
});

Deno.test("a caller's cap is taken before its body is read: 16 stalled bodies, the 17th gets 429 unread", async () => {
  const { app } = blockingApp();
  const bodies = Array.from({ length: 17 }, () => stallingBody());
  const send = (b: ReturnType<typeof stallingBody>) =>
    app.request("/t/body", {
      method: "PATCH",
      body: b.stream,
      headers: { ...origin, authorization: `Bearer ${bob}`, "content-length": "10" },
    });
  const pending = bodies.slice(0, 16).map(send);
  await Promise.all(bodies.slice(0, 16).map((b) => b.waiting));
  const refused = await send(bodies[16]);
  await assertProblem(refused, 429, "at most 16");
  assertEquals(refused.headers.get("retry-after"), "1");
  assertEquals(bodies[16].stats.pulls, 0); // never read
  assertEquals((await Promise.all(pending)).map((r) => r.status), Array(16).fill(408));
});

Deno.test("bodies past the isolate's buffer budget get a fast 503 + Retry-After before being read", async () => {
  const { app } = blockingApp();
  const first = stallingBody();
  const held = app.request("/t/body", {
    method: "PATCH",
    body: first.stream,
    headers: { ...origin, authorization: `Bearer ${carol}`, "content-length": "1000000" },
  });
  await first.waiting;
  assertEquals(bodyBudget.used, 1000000);
  const second = stallingBody();
  const start = performance.now();
  const refused = await app.request("/t/body", {
    method: "PATCH",
    body: second.stream,
    headers: { ...origin, authorization: `Bearer ${dave}`, "content-length": "1000000" },
  });
  await assertProblem(refused, 503, "too many request bodies");
  assertEquals(refused.headers.get("retry-after"), "1");
  assertEquals(refused.headers.get("access-control-allow-origin"), "*");
  assert(performance.now() - start < 250, "not fast"); // refused before reading: no wait at all
  assertEquals(second.stats.pulls, 0);
  // a chunked body reserves as it grows: past the budget it is cut off with 503 too
  const chunked = new ReadableStream<Uint8Array>({
    pull(c) {
      c.enqueue(new Uint8Array(16384));
    },
  }, { highWaterMark: 0 });
  const cut = await app.request("/t/body", {
    method: "PATCH",
    body: chunked,
    headers: { ...origin, authorization: `Bearer ${dave}` },
  });
  await assertProblem(cut, 503, "too many request bodies");
  assertEquals((await held).status, 408);
  assertEquals(bodyBudget.used, 0);
  const ok = await app.request("/t/body", {
    method: "PATCH",
    body: new Uint8Array(60000),
    headers: { ...origin, authorization: `Bearer ${dave}` },
  });
  assertEquals(await ok.json(), { bytes: 60000 });
});

Deno.test("a body without a valid user token is a 401 before it is read (unless the app takes anonymous bodies)", async () => {
  const { app } = blockingApp();
  for (const auth of [undefined, "Bearer not.a.jwt", "Bearer x junk"]) {
    const { stream, stats } = stallingBody();
    const res = await app.request("/t/body", {
      method: "PATCH",
      body: stream,
      headers: { ...origin, "content-length": "10", ...(auth ? { authorization: auth } : {}) },
    });
    await assertProblem(res, 401);
    assertEquals(res.headers.get("access-control-allow-origin"), "*");
    assertEquals(stats.pulls, 0, `${auth}: the body was read`);
  }
  const open = createFunctionApp("o", deps, { anonymousBodies: true });
  open.post("/x", async (c) => c.json({ bytes: (await c.req.arrayBuffer()).byteLength }));
  const res = await open.request("/o/x", { method: "POST", body: "{}", headers: origin });
  assertEquals(await res.json(), { bytes: 2 });
});

Deno.test("every problem answer carries the CORS headers: 429 and 503 from routes, 404, 405", async () => {
  const app = createFunctionApp("c", deps);
  app.get("/limited", () => {
    throw new ProblemError(429, "rate_limited", "slow down", { headers: { "retry-after": "7" } });
  });
  app.get("/down", () => {
    throw new ProblemError(503, "unavailable", "the database is unavailable, retry shortly");
  });
  for (
    const [path, status, method] of [
      ["/c/limited", 429, "GET"],
      ["/c/down", 503, "GET"],
      ["/c/nope", 404, "GET"],
      ["/c/limited", 405, "POST"],
    ] as const
  ) {
    const res = await app.request(path, { method, headers: origin });
    await assertProblem(res, status);
    assertEquals(res.headers.get("access-control-allow-origin"), "*", path);
    assertMatch(res.headers.get("access-control-expose-headers") ?? "", /retry-after/);
  }
});

Deno.test("overload and dependency failures map to 503/504, anything else to an opaque 500", () => {
  assertEquals(
    toProblem(Object.assign(new Error("canceling statement"), { code: "57014" })).status,
    504,
  );
  assertEquals(
    toProblem(Object.assign(new Error("closed"), { code: "CONNECTION_CLOSED" })).status,
    503,
  );
  assertEquals(
    toProblem(new DOMException("The operation was aborted due to timeout", "TimeoutError")).status,
    504,
  );
  const nul = Object.assign(new Error('invalid byte sequence for encoding "UTF8": 0x00'), {
    code: "22021",
  });
  assertEquals(toProblem(nul).status, 400);
  const internal = toProblem(new TypeError("x is undefined"));
  assertEquals(internal.status, 500);
  assertMatch(internal.detail, /^an unexpected error occurred$/);
});
