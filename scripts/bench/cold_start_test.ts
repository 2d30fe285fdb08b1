import { assert, assertEquals } from "../testing/assert.ts";
import { type ColdRow, coldStartMarkdown, spread } from "./cold_start.ts";

Deno.test("spread: nearest-rank median and p90, min and max", () => {
  const xs = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6];
  assertEquals(spread(xs), { median: 5, p90: 9, min: 1, max: 10 });
  assertEquals(spread([42]), { median: 42, p90: 42, min: 42, max: 42 });
  assertEquals(spread([1.04, 2.06, 3]).median, 2.1);
});

Deno.test("coldStartMarkdown: a row per target, the difference to the floor", () => {
  const s = (median: number) => ({ median, p90: median + 1, min: median, max: median + 2 });
  const rows: ColdRow[] = [
    {
      name: "bare Deno.serve (hello world)",
      runs: 3,
      listenMs: s(20),
      answerMs: s(25),
      requestMs: s(5),
      cpuMs: s(30),
      overFloorMs: 0,
    },
    {
      name: "feed",
      runs: 3,
      listenMs: s(90),
      answerMs: s(120),
      requestMs: s(30),
      cpuMs: null,
      overFloorMs: 95,
    },
  ];
  const md = coldStartMarkdown(rows);
  assert(
    md.includes(
      "| bare Deno.serve (hello world) | 20 / 21 ms | 5 / 6 ms | 25 / 26 ms | – | 30 / 31 |",
    ),
    md,
  );
  assert(md.includes("| feed | 90 / 91 ms | 30 / 31 ms | 120 / 121 ms | +95 ms | – |"), md);
  assert(md.includes("3 runs each"), md);
});
