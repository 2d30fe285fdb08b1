import { assert, assertEquals } from "../testing/assert.ts";
import { commandDelta, cpuMs, parseCommandStats, servingPids, totalCalls } from "./costs.ts";

Deno.test("parseCommandStats reads calls per command, subcommands included", () => {
  const info = [
    "# Commandstats",
    "cmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0",
    "cmdstat_get:calls=20,usec=20,usec_per_call=1.00,rejected_calls=0,failed_calls=0",
    "cmdstat_script|load:calls=1,usec=9,usec_per_call=9.00,rejected_calls=0,failed_calls=0",
    "cmdstat_info:calls=7,usec=70,usec_per_call=10.00,rejected_calls=0,failed_calls=0",
    "",
  ].join("\r\n");
  assertEquals(parseCommandStats(info), { evalsha: 10, get: 20, "script|load": 1, info: 7 });
});

Deno.test("commandDelta leaves INFO and unchanged commands out; totalCalls sums it", () => {
  const delta = commandDelta(
    { evalsha: 10, get: 20, info: 7, del: 3 },
    { evalsha: 14, get: 28, info: 9, del: 3, incrby: 4 },
  );
  assertEquals(delta, { evalsha: 4, get: 8, incrby: 4 });
  assertEquals(totalCalls(delta), 16);
});

Deno.test({
  name: "cpuMs grows with work done; servingPids starts with the process itself",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const pids = servingPids(Deno.pid);
    assertEquals(pids[0], Deno.pid);
    const before = (await cpuMs(pids))!;
    // Busy until the process's CPU time has grown by 30 ms (a CPU saturated by other tests
    // only makes that take longer), within 10 s of wall time.
    const deadline = performance.now() + 10_000;
    let after = before;
    let x = 0;
    while (after < before + 30 && performance.now() < deadline) {
      const until = performance.now() + 5;
      while (performance.now() < until) x += Math.sqrt(x + 1);
      after = (await cpuMs(pids))!;
    }
    assert(x > 0);
    assert(after >= before + 30, `CPU ${before} -> ${after} ms after 10 s of busy work`);
  },
});
