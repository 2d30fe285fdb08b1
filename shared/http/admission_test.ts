import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { Admission, GradientLimit } from "./admission.ts";
import { loadConfig } from "../config.ts";

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

Deno.test("per-caller caps and work slots are counted apart, and both come back", () => {
  const admission = new Admission(new GradientLimit({ ...options, initial: 40 }));
  const alice = { key: "user:a", cap: 16 };
  const carol = { key: "ip:10.0.0.1", cap: 32 };
  for (let i = 0; i < 16; i++) assertEquals(admission.enter(alice), true);
  assertEquals(admission.enter(alice), false); // her own cap: 429
  assertEquals(admission.inFlight, 0); // bodies being read hold no work slot
  for (let i = 0; i < 20; i++) assertEquals(admission.enter(carol), true);
  for (let i = 0; i < 40; i++) assertEquals(admission.acquire(), true);
  assertEquals(admission.acquire(), false); // the isolate's limit: 503
  assertEquals(admission.full, true);
  admission.release(5, false);
  assertEquals(admission.acquire(), true);
  admission.leave(alice);
  assertEquals(admission.held("user:a"), 15);
  assertEquals(admission.enter(alice), true);
  for (let i = 0; i < 16; i++) admission.leave(alice);
  assertEquals(admission.held("user:a"), 0);
});

Deno.test("at the floor of 32 a user still gets 16 in flight; an anonymous IP gets 16", () => {
  const admission = new Admission(new GradientLimit({ ...options, initial: 32, min: 32 }));
  feed(admission.limiter, 200, 400, 512); // overload: the limit sits at its floor
  assertEquals(admission.limiter.limit, 32);
  const alice = { key: "user:a", cap: 16 };
  assertEquals(admission.capOf(alice), 16);
  for (let i = 0; i < 16; i++) assertEquals(admission.enter(alice), true);
  assertEquals(admission.enter(alice), false);
  assertEquals(admission.capOf({ key: "ip:10.0.0.1", cap: 32 }), 16);
});

Deno.test("the default floor (MIN_IN_FLIGHT) keeps USER_MAX_IN_FLIGHT within half of it", () => {
  // Only the defaults.
  const cfg = loadConfig({ DATABASE_URL: "postgres://127.0.0.1/defaults" });
  assertEquals(cfg.admission.minInFlight, 32);
  assert(cfg.admission.perUser >= 16 && cfg.admission.perUser <= cfg.admission.minInFlight / 2);
});
