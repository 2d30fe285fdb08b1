/**
 * Where a cold start's module loading goes: imports the given modules one by one, in order, in
 * a fresh `deno run` process, and times each import (wall, and the main thread's CPU from
 * /proc/thread-self/schedstat), so each row is what that module adds on top of the rows before
 * it (a cost shared by several modules, e.g. Deno's Node compatibility layer, lands on the
 * first to need it). Repeats in `COLD_MODULE_RUNS` (5) fresh processes and prints the medians
 * as a markdown table. Deno's caches should be warm (run it twice; the first run is not
 * reported apart).
 *
 *   deno run -A scripts/bench/cold_modules.ts                    # the feed's graph, leaves first
 *   deno run -A scripts/bench/cold_modules.ts zod ./shared/config.ts ./functions/health/app.ts
 *
 * Paths starting with "." are relative to the repository root; others go through deno.json's
 * import map (`node:` builtins too).
 *
 * @module
 */
import { repoRoot } from "../dev/local_services.ts";

/** The feed's graph, heaviest dependencies first, then ours (README: Cold start). */
export const feedModules = [
  "node:net",
  "node:tls",
  "node:crypto",
  "node:fs",
  "postgres",
  "zod",
  "hono",
  "@upstash/redis",
  "@upstash/ratelimit",
  "jose",
  "./shared/config.ts",
  "./shared/deps.ts",
  "@hono/zod-openapi",
  "./shared/http/app.ts",
  "./functions/feed/app.ts",
];

/** One process: each import's wall and main-thread CPU ms. */
async function child(specifiers: string[]): Promise<void> {
  const onCpu = () =>
    Number(Deno.readTextFileSync("/proc/thread-self/schedstat").split(" ")[0]) / 1e6;
  const rows: [number, number][] = [];
  for (const spec of specifiers) {
    const t = performance.now(), c = onCpu();
    await import(spec.startsWith(".") ? `${repoRoot}/${spec.slice(2)}` : spec);
    rows.push([performance.now() - t, onCpu() - c]);
  }
  console.log(JSON.stringify(rows));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

if (import.meta.main) {
  if (Deno.args[0] === "--child") {
    await child(Deno.args.slice(1));
  } else {
    const specifiers = Deno.args.length ? Deno.args : feedModules;
    const runs = Number(Deno.env.get("COLD_MODULE_RUNS") ?? 5);
    const results: [number, number][][] = [];
    for (let i = 0; i < runs; i++) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", import.meta.filename!, "--child", ...specifiers],
        cwd: repoRoot,
        stderr: "inherit",
      }).output();
      if (!out.success) Deno.exit(1);
      results.push(JSON.parse(new TextDecoder().decode(out.stdout)));
    }
    const r = (x: number) => Math.round(x * 10) / 10;
    console.log("| module (in this order) | wall ms, median | main-thread CPU ms, median |");
    console.log("| --- | ---: | ---: |");
    specifiers.forEach((spec, i) => {
      const wall = median(results.map((run) => run[i][0]));
      const cpu = median(results.map((run) => run[i][1]));
      console.log(`| ${spec} | ${r(wall)} | ${r(cpu)} |`);
    });
    console.log(
      `\n${runs} fresh processes; main-thread CPU from /proc/thread-self/schedstat ` +
        "(its resolution may be a scheduler tick).",
    );
  }
}
