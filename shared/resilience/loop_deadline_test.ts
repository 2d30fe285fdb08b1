import { assert } from "../../scripts/testing/assert.ts";
import { saturate } from "../../scripts/testing/test_cpu.ts";
import { loopDeadline } from "./loop_deadline.ts";

Deno.test({
  name: "loopDeadline: a busy event loop stretches the window instead of spending it",
  fn: async () => {
    const stop = new AbortController();
    const load = saturate(40, stop.signal);
    const start = performance.now();
    await loopDeadline(50, 5000).done;
    const saturated = performance.now() - start;
    stop.abort();
    await load;
    // Each 10 ms step waits behind a 40 ms block: five steps, not one timer that fired late.
    assert(saturated >= 150, `resolved after ${saturated.toFixed(0)} ms of a saturated loop`);
    const idleStart = performance.now();
    await loopDeadline(50, 5000).done;
    const idle = performance.now() - idleStart;
    // Resolved by its 50 ms of loop time, not by the 5 s wall cap.
    assert(idle >= 49 && idle < 4000, `idle loop: ${idle.toFixed(0)} ms`);
    // The wall-clock bound holds however busy the loop is.
    const stop2 = new AbortController();
    const load2 = saturate(40, stop2.signal);
    const capStart = performance.now();
    await loopDeadline(10_000, 200).done;
    const capped = performance.now() - capStart;
    stop2.abort();
    await load2;
    assert(capped < 5000, `capped at ${capped.toFixed(0)} ms, not 10 s of loop time`);
  },
});
