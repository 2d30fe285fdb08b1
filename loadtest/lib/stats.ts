/**
 * The load runner's metrics: trends (latency samples → percentiles), rates (fraction of
 * true), counters; and thresholds written like k6's (`p(95)<500`, `rate<0.01`, `count==0`).
 *
 * @module
 */

/** A metric's summary values, by name (`p(95)`, `avg`, `rate`, `count`, …). */
export type Summary = Record<string, number>;

/** Latency samples (ms). */
export class Trend {
  #samples: number[] = [];
  add(ms: number): void {
    this.#samples.push(ms);
  }
  get count(): number {
    return this.#samples.length;
  }
  summary(): Summary {
    const s = this.#samples.toSorted((a, b) => a - b);
    const at = (p: number) =>
      s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : 0;
    const sum = s.reduce((a, b) => a + b, 0);
    return {
      count: s.length,
      avg: s.length ? sum / s.length : 0,
      min: s[0] ?? 0,
      med: at(50),
      "p(90)": at(90),
      "p(95)": at(95),
      "p(99)": at(99),
      max: s.at(-1) ?? 0,
    };
  }
}

/** A fraction of true outcomes. */
export class Rate {
  passes = 0;
  fails = 0;
  add(ok: boolean): void {
    if (ok) this.passes++;
    else this.fails++;
  }
  summary(): Summary {
    const total = this.passes + this.fails;
    return {
      rate: total ? this.passes / total : 0,
      true: this.passes,
      false: this.fails,
      count: total,
    };
  }
}

/** A count. */
export class Counter {
  count = 0;
  add(n = 1): void {
    this.count += n;
  }
  summary(): Summary {
    return { count: this.count };
  }
}

/** Every metric of a run, created on first use. Names may carry tags: `http_req_duration{name:feed}`. */
export class Registry {
  readonly trends = new Map<string, Trend>();
  readonly rates = new Map<string, Rate>();
  readonly counters = new Map<string, Counter>();

  trend(name: string): Trend {
    return getOr(this.trends, name, () => new Trend());
  }
  rate(name: string): Rate {
    return getOr(this.rates, name, () => new Rate());
  }
  counter(name: string): Counter {
    return getOr(this.counters, name, () => new Counter());
  }

  /** All summaries, by metric name. */
  summaries(): Record<string, Summary> {
    const out: Record<string, Summary> = {};
    for (const [n, m] of [...this.trends, ...this.rates, ...this.counters]) out[n] = m.summary();
    return out;
  }
}

function getOr<K, V>(map: Map<K, V>, key: K, make: () => V): V {
  let v = map.get(key);
  if (v === undefined) map.set(key, v = make());
  return v;
}

/** One threshold's verdict. */
export interface ThresholdResult {
  metric: string;
  expression: string;
  actual: number;
  ok: boolean;
}

/**
 * Evaluates thresholds such as `{"http_req_duration": ["p(95)<500"], "http_req_failed":
 * ["rate<0.01"]}`. A metric that never got a sample counts as 0.
 */
export function evaluate(
  thresholds: Record<string, string[]>,
  summaries: Record<string, Summary>,
): ThresholdResult[] {
  const results: ThresholdResult[] = [];
  for (const [metric, expressions] of Object.entries(thresholds)) {
    for (const expression of expressions) {
      const m = expression.replace(/\s+/g, "").match(
        /^([a-z]+(?:\(\d+(?:\.\d+)?\))?)(<=|>=|==|<|>)(-?[\d.]+)$/,
      );
      if (!m) throw new Error(`bad threshold for ${metric}: ${expression}`);
      const [, stat, op, limitText] = m;
      const actual = summaries[metric]?.[stat] ?? 0;
      const limit = Number(limitText);
      const ok = op === "<"
        ? actual < limit
        : op === "<="
        ? actual <= limit
        : op === ">"
        ? actual > limit
        : op === ">="
        ? actual >= limit
        : actual === limit;
      results.push({ metric, expression, actual, ok });
    }
  }
  return results;
}
