import { assert, assertEquals } from "../testing/assert.ts";
import {
  applySourceMaps,
  type CallFrame,
  type CpuProfile,
  decodeMappings,
  emitCacheSourceMaps,
  profileTable,
  profileTimes,
} from "./profile.ts";

const assertIncludes = (text: string, part: string) =>
  assert(text.includes(part), `expected ${JSON.stringify(part)} in:\n${text}`);

const frame = (functionName: string, line = 0): CallFrame => ({
  functionName,
  scriptId: "1",
  url: functionName.startsWith("(") ? "" : "file:///repo/app.ts",
  lineNumber: line,
  columnNumber: 0,
});

/**
 * (root) → main → fib → fib (recursion) ; main → render ; (root) → (idle) ;
 * (root) → (garbage collector).
 */
const profile = (): CpuProfile => ({
  nodes: [
    { id: 1, callFrame: frame("(root)", -1), children: [2, 6, 7] },
    { id: 2, callFrame: frame("main", 0), children: [3, 5] },
    { id: 3, callFrame: frame("fib", 10), children: [4] },
    { id: 4, callFrame: frame("fib", 10) },
    { id: 5, callFrame: frame("render", 20) },
    { id: 6, callFrame: frame("(idle)", -1) },
    { id: 7, callFrame: frame("(garbage collector)", -1) },
  ],
  startTime: 1000,
  // Samples at 1000, 1100, 1300, 1400, 1600, 1700, each lasting until the next; the last until
  // endTime (1800): fib→fib 100, fib 200, render 100, main 200, idle 100, GC 100 µs.
  samples: [4, 3, 5, 2, 6, 7],
  timeDeltas: [0, 100, 200, 100, 200, 100],
  endTime: 1800,
});

Deno.test("profileTimes: self on top of the stack, total once per sample (recursion too)", () => {
  const t = profileTimes(profile());
  const by = Object.fromEntries(t.functions.map((f) => [f.name, f]));
  assertEquals(t.samples, 6);
  assertEquals(t.sampledUs, 800);
  assertEquals(t.idleUs, 100);
  assertEquals(t.busyUs, 700);
  // fib: samples 1 (fib→fib, 100 µs) and 2 (fib, 200 µs); not 400 for the recursive frame.
  assertEquals([by.fib.selfUs, by.fib.totalUs, by.fib.line], [300, 300, 11]);
  assertEquals([by.render.selfUs, by.render.totalUs], [100, 100]);
  // main: its own sample (200 µs), and under everything else it called.
  assertEquals([by.main.selfUs, by.main.totalUs], [200, 600]);
  assertEquals([by["(garbage collector)"].selfUs, by["(garbage collector)"].totalUs], [100, 100]);
  assertEquals(by["(root)"], undefined);
  assertEquals(by["(idle)"], undefined);
  assertEquals(t.functions.map((f) => f.name), ["fib", "main", "render", "(garbage collector)"]);
});

Deno.test("profileTable: rows by self and by total, percentages of busy time", () => {
  const md = profileTable(profileTimes(profile()), 2, "/repo");
  assertIncludes(md, "6 samples over 0.8 ms: busy 0.7 ms, idle 0.1 ms (12.5%)");
  const [self, total] = md.split("by total time:");
  assertIncludes(self, "| fib | app.ts:11 | 0.3 | 42.9% | 0.3 | 42.9% |");
  assertIncludes(self, "| main | app.ts:1 | 0.2 | 28.6% | 0.6 | 85.7% |");
  assertEquals(self.includes("render"), false); // top 2 only
  assertEquals(total.indexOf("| main |") < total.indexOf("| fib |"), true);
});

Deno.test("source maps from Deno's emit cache: generated positions become the source's", async () => {
  // Generated line 0 col 0 → source line 3 col 0; generated line 1 col 4 → source line 8 col 2.
  assertEquals(decodeMappings("AAGA;IAKE"), [[[0, 0, 3, 0]], [[4, 0, 8, 2]]]);
  const map = { version: 3, sources: ["file:///repo/app.ts"], mappings: "AAGA;IAKE" };
  const code = "function f() {\n    g();\n}\n";
  const denoDir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${denoDir}/gen/file/repo`, { recursive: true });
    await Deno.writeTextFile(
      `${denoDir}/gen/file/repo/app.ts.js`,
      `${code}//# sourceMappingURL=data:application/json;base64,${btoa(JSON.stringify(map))}\n`,
    );
    const p: CpuProfile = {
      nodes: [
        { id: 1, callFrame: { ...frame("f", 1), columnNumber: 9 } },
        { id: 2, callFrame: { ...frame("h", 1), scriptId: "2", columnNumber: 9 } },
      ],
      startTime: 0,
      endTime: 1,
    };
    const scripts = {
      "1": { url: "file:///repo/app.ts", length: code.length },
      // Another emit than the one V8 ran (length differs): not used.
      "2": { url: "file:///repo/app.ts", length: code.length + 1 },
    };
    const maps = await emitCacheSourceMaps(p, scripts, denoDir);
    assertEquals([...maps.keys()], ["1"]);
    assertEquals(applySourceMaps(p, maps), 1);
    assertEquals([p.nodes[0].callFrame.lineNumber, p.nodes[0].callFrame.columnNumber], [8, 2]);
    assertEquals(p.nodes[1].callFrame.lineNumber, 1);
  } finally {
    await Deno.remove(denoDir, { recursive: true });
  }
});
