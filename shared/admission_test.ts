import { assert, assertEquals } from "../scripts/assert.ts";
import { Admission, GradientLimit } from "./admission.ts";

const options = { initial: 64, min: 24, max: 512, targetMs: 100, windowMs: 0, windowSamples: 10 };

/** Feeds `windows` windows of 10 samples of `rttMs` with `inFlight` requests in flight. */
function feed(limit: GradientLimit, windows: number, rttMs: number, inFlight: number) {
  for (let w = 0; w < windows; w++) {
    for (let i = 0; i < 10; i++) limit.sample(rttMs, inFlight);
  }
}

Deno.test("the limit grows while latency holds and the limit is in use", () => {
  const limit = new GradientLimit(options);
  feed(limit, 50, 5, 64);
  assert(limit.limit > 64, `limit ${limit.limit}`);
  const grown = limit.limit;
  feed(limit, 500, 5, 1000);
  assertEquals(limit.limit, 512); // capped at the ceiling
  assert(grown < 512);
});

Deno.test("an application that doesn't use its limit doesn't grow it", () => {
  const limit = new GradientLimit(options);
  feed(limit, 100, 5, 10);
  assertEquals(limit.limit, 64);
});

Deno.test("queueing (latency above the baseline) shrinks the limit down to its floor", () => {
  const limit = new GradientLimit(options);
  feed(limit, 30, 5, 64); // baseline ~5 ms
  const before = limit.limit;
  feed(limit, 5, 20, 64); // 4x the baseline: requests are queueing
  assert(limit.limit < before, `${limit.limit} !< ${before}`);
  feed(limit, 200, 20, 64);
  assertEquals(limit.limit, 24);
});

Deno.test("a baseline that drifted up is capped by the latency target", () => {
  const limit = new GradientLimit(options);
  // Slow from the start: Gradient2 alone would take 400 ms as normal and keep growing.
  feed(limit, 100, 400, 512);
  assertEquals(limit.limit, 24);
  assert(limit.baselineMs > 100);
});

Deno.test("requests that ran out of budget back the limit off", () => {
  const limit = new GradientLimit(options);
  for (let i = 0; i < 10; i++) limit.sample(5, 64, i === 0);
  assertEquals(limit.limit, Math.floor(64 * 0.9));
});

Deno.test("per-caller caps hold within the total, and slots come back", () => {
  const admission = new Admission(new GradientLimit({ ...options, initial: 40 }));
  const alice = { key: "user:a", cap: 16 };
  const bob = { key: "user:b", cap: 16 };
  const carol = { key: "ip:10.0.0.1", cap: 32 };
  for (let i = 0; i < 16; i++) assertEquals(admission.acquire(alice), null);
  assertEquals(admission.acquire(alice), "caller");
  for (let i = 0; i < 16; i++) assertEquals(admission.acquire(bob), null);
  for (let i = 0; i < 8; i++) assertEquals(admission.acquire(carol), null);
  assertEquals(admission.acquire(carol), "overload");
  assertEquals(admission.inFlight, 40);
  admission.release(alice, 5, false);
  assertEquals(admission.held("user:a"), 15);
  assertEquals(admission.acquire(carol), null);
  for (let i = 0; i < 15; i++) admission.release(alice, 5, false);
  assertEquals(admission.held("user:a"), 0);
  assertEquals(admission.inFlight, 25);
});

Deno.test("when the limit is small, no caller may hold more than half of it", () => {
  const admission = new Admission(new GradientLimit({ ...options, initial: 8, min: 8 }));
  const alice = { key: "user:a", cap: 16 };
  assertEquals(admission.capOf(alice), 4);
  for (let i = 0; i < 4; i++) assertEquals(admission.acquire(alice), null);
  assertEquals(admission.acquire(alice), "caller");
  for (let i = 0; i < 4; i++) assertEquals(admission.acquire({ key: "user:b", cap: 16 }), null);
  assertEquals(admission.acquire({ key: "user:c", cap: 16 }), "overload");
});
