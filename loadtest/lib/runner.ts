/**
 * Runs a load scenario the way k6 would: `setup()` once, the schedules in parallel, then
 * thresholds and `handleSummary` (ours writes JSON and a text table). Exit code 99 when a
 * threshold fails, like k6, so CI can gate on it.
 *
 * We don't run k6 itself: it is AGPL-licensed, which our dependency policy does not allow.
 *
 * @module
 */
import { LoadClient } from "./client.ts";
import { type Exec, runSchedule, type Schedule } from "./executors.ts";
import { evaluate, Registry, type Summary, type ThresholdResult } from "./stats.ts";

/** A load scenario. */
export interface Scenario<D> {
  name: string;
  setup?: (client: LoadClient) => Promise<D>;
  /** Named parts running in parallel, each with its schedule and iteration. */
  parts: Record<string, { schedule: Schedule; exec: Exec<D> }>;
  thresholds: Record<string, string[]>;
  /** Extra values sampled during the run (e.g. server RSS), reported in the summary. */
  samplers?: Record<string, () => Promise<number | null>>;
}

/** What a run produced. */
export interface RunResult {
  scenario: string;
  startedAt: string;
  durationS: number;
  metrics: Record<string, Summary>;
  thresholds: ThresholdResult[];
  samples: Record<string, number[]>;
  errors: string[];
  ok: boolean;
}

/** The client every scenario uses against `BASE_URL`. */
export function clientFor(baseUrl: string, metrics: Registry): LoadClient {
  return new LoadClient(baseUrl.replace(/\/$/, ""), metrics);
}

/** Runs `scenario` against `baseUrl`. */
export async function runScenario<D>(scenario: Scenario<D>, baseUrl: string): Promise<RunResult> {
  const metrics = new Registry();
  const client = clientFor(baseUrl, metrics);
  const data = scenario.setup ? await scenario.setup(client) : (undefined as D);
  const errors: string[] = [];
  const samples: Record<string, number[]> = {};
  let sampling = true;
  const samplerLoops = Object.entries(scenario.samplers ?? {}).map(async ([name, sample]) => {
    samples[name] = [];
    while (sampling) {
      const v = await sample().catch(() => null);
      if (v !== null) samples[name].push(v);
      await new Promise((r) => setTimeout(r, 1000));
    }
  });
  const startedAt = new Date();
  const start = performance.now();
  await Promise.all(
    Object.entries(scenario.parts).map(([name, part]) =>
      runSchedule(part.schedule, part.exec, { client, data }, metrics, (err) => {
        metrics.counter(`errors{part:${name}}`).add();
        if (errors.length < 20) errors.push(`${name}: ${err instanceof Error ? err.message : err}`);
      })
    ),
  );
  sampling = false;
  await Promise.all(samplerLoops);
  const summaries = metrics.summaries();
  for (const [name, values] of Object.entries(samples)) {
    if (!values.length) continue;
    // Growth from the settled start (median of the first three samples) to the end.
    const base = values.slice(0, 3).toSorted((a, b) => a - b)[Math.min(1, values.length - 1)];
    summaries[`sample_${name}`] = {
      count: values.length,
      first: values[0],
      max: Math.max(...values),
      last: values.at(-1)!,
      growth: base ? values.at(-1)! / base - 1 : 0,
    };
  }
  const thresholds = evaluate(scenario.thresholds, summaries);
  return {
    scenario: scenario.name,
    startedAt: startedAt.toISOString(),
    durationS: Math.round((performance.now() - start) / 100) / 10,
    metrics: summaries,
    thresholds,
    samples,
    errors,
    ok: thresholds.every((t) => t.ok),
  };
}

/** A text table of the run (our `handleSummary`). */
export function textSummary(r: RunResult): string {
  const lines = [
    `scenario ${r.scenario}: ${r.durationS} s, ${
      r.ok ? "all thresholds passed" : "THRESHOLDS FAILED"
    }`,
  ];
  const fmt = (n: number) => Number.isInteger(n) ? String(n) : n.toFixed(2);
  for (const [name, s] of Object.entries(r.metrics).sort(([a], [b]) => a.localeCompare(b))) {
    const keys = "p(95)" in s
      ? ["count", "avg", "med", "p(95)", "p(99)", "max"]
      : "rate" in s
      ? ["rate", "true", "false"]
      : ["count"];
    lines.push(`  ${name.padEnd(52)} ${keys.map((k) => `${k}=${fmt(s[k])}`).join("  ")}`);
  }
  for (const [name, values] of Object.entries(r.samples)) {
    if (values.length) {
      lines.push(
        `  sample ${name}: first=${fmt(values[0])} max=${fmt(Math.max(...values))} last=${
          fmt(values.at(-1)!)
        }`,
      );
    }
  }
  lines.push("thresholds:");
  for (const t of r.thresholds) {
    lines.push(`  ${t.ok ? "✓" : "✗"} ${t.metric} ${t.expression} (actual ${fmt(t.actual)})`);
  }
  if (r.errors.length) lines.push("errors:", ...r.errors.map((e) => `  ${e}`));
  return lines.join("\n");
}

/** Writes `<dir>/<scenario>.json` and `.txt`, prints the table, and returns k6's exit code. */
export async function handleSummary(r: RunResult, dir: string): Promise<number> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/${r.scenario}.json`, JSON.stringify(r, null, 2));
  const text = textSummary(r);
  await Deno.writeTextFile(`${dir}/${r.scenario}.txt`, text + "\n");
  console.log(text);
  return r.ok ? 0 : 99;
}
