import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { type BreakerStore, isBreakerFailure } from "./breaker_settings.ts";
import { CircuitBreaker } from "./breaker.ts";

Deno.test("isBreakerFailure", () => {
  for (const s of [429, 500, 502, 503, 504]) assert(isBreakerFailure(s), String(s));
  for (const s of [200, 204, 400, 401, 403, 404, 409, 413, 422]) {
    assert(!isBreakerFailure(s), String(s));
  }
  assert(isBreakerFailure(new DOMException("t", "TimeoutError")));
  assert(isBreakerFailure(new DOMException("a", "AbortError")));
  assert(isBreakerFailure(new TypeError("fetch failed")));
  assert(isBreakerFailure(Object.assign(new Error("rate"), { status: 429 })));
  assert(!isBreakerFailure(Object.assign(new Error("bad request"), { status: 400 })));
  assert(!isBreakerFailure(new Response(null, { status: 422 })));
  assert(isBreakerFailure(new Response(null, { status: 500 })));
});

Deno.test("settings: successesToClose defaults to maxProbes; nonsense is refused", () => {
  // Never called: settings are checked when the breaker is made.
  const store: BreakerStore = {
    acquire: () => Promise.reject(new Error("not called")),
    record: () => Promise.reject(new Error("not called")),
    read: () => Promise.reject(new Error("not called")),
  };
  assertEquals(new CircuitBreaker({ name: "a", store, maxProbes: 3 }).settings.successesToClose, 3);
  assertEquals(new CircuitBreaker({ name: "b", store }).settings.successesToClose, 1);
  for (const bad of [{ maxProbes: 0 }, { failureRate: 0 }, { maxProbes: 1, successesToClose: 2 }]) {
    let threw = false;
    try {
      new CircuitBreaker({ name: "c", store, ...bad });
    } catch (err) {
      threw = err instanceof RangeError;
    }
    assert(threw, JSON.stringify(bad));
  }
});
