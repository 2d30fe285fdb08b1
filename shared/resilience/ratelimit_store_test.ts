import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { MemoryWindowStore } from "./ratelimit_store.ts";

const W = 60_000;
/** A moment at the start of an hour (so of a minute too), far from real time. */
const H = 3_600_000;
const epoch = Math.floor(Date.now() / H) * H + 1000 * H;

Deno.test("the isolate's limiter is bounded: a spray of identifiers evicts, counts stay", async () => {
  let t = epoch;
  const store = new MemoryWindowStore({ limit: 2, windowS: 60 }, () => t, 100);
  for (let i = 0; i < 2; i++) assert((await store.limit("steady")).success);
  t += W; // next window: "steady" still weighs in through the previous one
  for (let i = 0; i < 99; i++) await store.limit(`spray-${i}`);
  assertEquals(store.size, 100);
  t += 2 * W; // everything so far is older than the previous window
  for (let i = 0; i < 500; i++) await store.limit(`spray2-${i}`);
  assert(store.size <= 100, `${store.size} identifiers held`);
  assertEquals((await store.limit("spray2-499")).success, true); // its second request: 2 of 2
  assertEquals((await store.limit("spray2-499")).success, false);
});
