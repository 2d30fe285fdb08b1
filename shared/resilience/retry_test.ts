import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { backoffDelay, parseRetryAfter, RetryBudget } from "./retry.ts";

Deno.test("backoff doubles from 1 s with ±25% jitter, capped", () => {
  assertEquals([1, 2, 3].map((r) => backoffDelay(r, {}, () => 0.5)), [1000, 2000, 4000]);
  assertEquals(backoffDelay(1, {}, () => 0), 750);
  assertEquals(backoffDelay(1, {}, () => 1), 1250);
  assertEquals(backoffDelay(10, { maxDelayMs: 5000 }, () => 0.5), 5000);
});

Deno.test("Retry-After as seconds or an HTTP date", () => {
  assertEquals(parseRetryAfter("3"), 3000);
  assertEquals(parseRetryAfter(new Date(10_000).toUTCString(), 4000), 6000);
  assertEquals(parseRetryAfter("soon"), undefined);
  assertEquals(parseRetryAfter(null), undefined);
});

Deno.test("the retry budget allows retries up to 20% of recent calls, with a floor", () => {
  let now = 0;
  const budget = new RetryBudget(0.2, 3, 10_000, () => now);
  for (let i = 0; i < 50; i++) budget.recordCall();
  let granted = 0;
  while (budget.tryRetry()) granted++;
  assertEquals(granted, 10);
  now = 20_000; // the window has passed: only the floor remains
  granted = 0;
  while (budget.tryRetry()) granted++;
  assertEquals(granted, 3);
  assert(!budget.tryRetry());
});
