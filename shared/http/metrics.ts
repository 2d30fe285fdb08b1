/**
 * Per-isolate counters and histograms in Prometheus text format (served by
 * `GET /functions/v1/health/metrics`). Written by hand: prom-client is built for long-lived
 * Node servers (default collectors, cluster aggregation) and the text format is small.
 *
 * @module
 */
import type postgres from "postgres";

/** Label names to values. */
export type Labels = Record<string, string | number>;

/** A sample a collector reports at scrape time (gauges computed on demand). */
export interface Sample {
  name: string;
  labels?: Labels;
  value: number;
  help?: string;
  type?: "gauge" | "counter";
}

/** Default latency buckets, in milliseconds. */
export const latencyBucketsMs = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000];

interface Histogram {
  buckets: number[];
  series: Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>;
}

function labelKey(labels: Labels): string {
  return Object.keys(labels).sort().map((k) =>
    `${k}="${String(labels[k]).replace(/["\\\n]/g, "_")}"`
  )
    .join(",");
}

/** A registry of metrics. One per isolate: {@link metrics}. */
export class Metrics {
  readonly #counters = new Map<string, Map<string, number>>();
  readonly #histograms = new Map<string, Histogram>();
  readonly #help = new Map<string, string>();
  readonly #collectors = new Map<unknown, () => Sample[] | Promise<Sample[]>>();

  /** Sets the `# HELP` text of a metric. */
  describe(name: string, help: string): void {
    this.#help.set(name, help);
  }

  /** Adds `by` to a counter. */
  inc(name: string, labels: Labels = {}, by = 1): void {
    let series = this.#counters.get(name);
    if (!series) this.#counters.set(name, series = new Map());
    const key = labelKey(labels);
    series.set(key, (series.get(key) ?? 0) + by);
  }

  /** A counter's current value (tests, benchmarks). */
  value(name: string, labels: Labels = {}): number {
    return this.#counters.get(name)?.get(labelKey(labels)) ?? 0;
  }

  /** Records one observation in a histogram. */
  observe(name: string, labels: Labels, value: number, buckets = latencyBucketsMs): void {
    let h = this.#histograms.get(name);
    if (!h) this.#histograms.set(name, h = { buckets, series: new Map() });
    const key = labelKey(labels);
    let s = h.series.get(key);
    if (!s) h.series.set(key, s = { labels, counts: h.buckets.map(() => 0), sum: 0, count: 0 });
    h.buckets.forEach((b, i) => value <= b && s.counts[i]++);
    s.sum += value;
    s.count++;
  }

  /**
   * Registers a function whose samples are added at every scrape. A later collector with the
   * same `key` replaces it (`createDeps` registers its pool's and caches' under fixed keys, so
   * a process that builds deps again, as tests do, reports the newest once).
   */
  collect(collector: () => Sample[] | Promise<Sample[]>, key: unknown = collector): void {
    this.#collectors.set(key, collector);
  }

  /** The Prometheus text exposition of everything. */
  async render(): Promise<string> {
    const out: string[] = [];
    const head = (name: string, type: string) => {
      if (this.#help.has(name)) out.push(`# HELP ${name} ${this.#help.get(name)}`);
      out.push(`# TYPE ${name} ${type}`);
    };
    const fmt = (name: string, key: string, v: number) =>
      out.push(`${name}${key ? `{${key}}` : ""} ${v}`);
    for (const [name, series] of this.#counters) {
      head(name, "counter");
      for (const [key, v] of series) fmt(name, key, v);
    }
    for (const [name, h] of this.#histograms) {
      head(name, "histogram");
      for (const [key, s] of h.series) {
        const sep = key ? `${key},` : "";
        // counts are cumulative already: an observation lands in every bucket ≥ it
        h.buckets.forEach((b, i) => fmt(`${name}_bucket`, `${sep}le="${b}"`, s.counts[i]));
        fmt(`${name}_bucket`, `${sep}le="+Inf"`, s.count);
        fmt(`${name}_sum`, key, s.sum);
        fmt(`${name}_count`, key, s.count);
      }
    }
    const samples = (await Promise.all(
      [...this.#collectors.values()].map((c) => Promise.resolve(c()).catch(() => [])),
    ))
      .flat();
    const byName = Map.groupBy(samples, (s) => s.name);
    for (const [name, group] of byName) {
      if (group[0].help) this.#help.set(name, group[0].help);
      head(name, group[0].type ?? "gauge");
      for (const s of group) fmt(name, labelKey(s.labels ?? {}), s.value);
    }
    return out.join("\n") + "\n";
  }
}

/** The isolate's metrics. */
export const metrics: Metrics = new Metrics();

/**
 * The process's memory, read at each scrape: what a soak test watches for leaks (the edge
 * runtime gives an isolate no /proc of its own, so this is the only view it has).
 */
export function processSamples(): Sample[] {
  const m = Deno.memoryUsage();
  return [
    {
      name: "process_resident_memory_bytes",
      help: "Resident set size of the process serving this isolate",
      value: m.rss,
    },
    {
      name: "process_pid",
      help: "Process id (tells apart the processes behind one URL)",
      value: Deno.pid,
    },
    { name: "process_heap_used_bytes", help: "V8 heap in use", value: m.heapUsed },
    { name: "process_heap_total_bytes", help: "V8 heap reserved", value: m.heapTotal },
    {
      name: "process_external_memory_bytes",
      help: "Memory held outside the V8 heap",
      value: m.external,
    },
  ];
}
metrics.collect(processSamples);

/**
 * Registers `db_connections{application_name,state}`: the database's open connections of
 * every process of this app (`application_name` `rockout-edge…`), from `pg_stat_activity`
 * through `db` (give it a connection of its own: a scrape must not wait behind a full pool).
 * Server-wide on purpose: a leak shows as a count that keeps growing, whichever isolate leaks.
 * Not cached: one cheap catalog read per scrape, and only secret-key holders can scrape.
 */
export function collectDbConnections(db: postgres.Sql): void {
  metrics.collect(() => dbConnections(db), "db_connections");
}

async function dbConnections(db: postgres.Sql): Promise<Sample[]> {
  const rows = await db<{ application_name: string; state: string; n: number }[]>`
    select application_name, coalesce(state, 'unknown') as state, count(*)::int as n
      from pg_catalog.pg_stat_activity
     where datname = current_database() and application_name like 'rockout-edge%'
     group by 1, 2`;
  const help = "Open database connections of this app (all processes), by application_name " +
    "and state";
  const samples: Sample[] = rows.map((r) => ({
    name: "db_connections",
    help,
    labels: { application_name: r.application_name, state: r.state },
    value: r.n,
  }));
  samples.push({
    name: "db_connections_total_open",
    help: "Open database connections of this app (all processes)",
    value: rows.reduce((sum, r) => sum + r.n, 0),
  });
  return samples;
}
