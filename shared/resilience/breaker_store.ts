/**
 * Breaker state in Redis: one hash per breaker, every step one Lua script
 * (shared/resilience/breaker.lua.ts), so every isolate sees one breaker per API.
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import { acquireScript, peekScript, recordScript } from "./breaker.lua.ts";
import type {
  AcquireResult,
  BreakerSettings,
  BreakerSnapshot,
  BreakerState,
  BreakerStore,
  Outcome,
  PeekResult,
  Permit,
  RecordResult,
} from "./breaker_settings.ts";
import { runScript } from "../data/redis_script.ts";
import { timed } from "../http/timing.ts";

/** How long an untouched breaker hash lives (refreshed on every write). */
function keyTtlMs(s: BreakerSettings): number {
  return Math.max(86_400_000, 2 * (s.windowMs + s.openMs + s.probeTimeoutMs));
}

/** A script's reply row. */
type Row = (string | number)[];

/**
 * Breaker state in Redis: one hash per breaker at `prefix + name`, every step one Lua script
 * (shared/data/redis_script.ts: EVALSHA, one EVAL after a script flush or on a fresh server).
 */
export class RedisBreakerStore implements BreakerStore {
  constructor(
    readonly redis: Redis,
    /** Key prefix, e.g. `rockout:breaker:`. */
    readonly prefix: string,
  ) {}

  /** The hash holding `name`'s state. */
  key(name: string): string {
    return this.prefix + name;
  }

  acquire(name: string, now: number, s: BreakerSettings): Promise<AcquireResult> {
    const args = [now, s.maxProbes, s.probeTimeoutMs, keyTtlMs(s)];
    return this.#run(acquireScript, name, args).then((r) => ({
      allowed: Number(r[0]) === 1,
      state: String(r[1]) as BreakerState,
      generation: Number(r[2]),
      until: Number(r[3]),
      probe: Number(r[4]),
      token: Number(r[5]),
      from: (String(r[6]) || null) as BreakerState | null,
    }));
  }

  record(
    name: string,
    now: number,
    outcome: Outcome,
    permit: Permit,
    s: BreakerSettings,
    count = 1,
  ): Promise<RecordResult> {
    const args = [
      now,
      outcome === "failure" ? 1 : 0,
      permit.generation,
      permit.probe,
      permit.token,
      s.failureThreshold,
      s.failureRate,
      s.minimumCalls,
      s.windowMs,
      s.windowBuckets,
      s.openMs,
      s.successesToClose,
      keyTtlMs(s),
      ...(count === 1 ? [] : [count]),
    ];
    return this.#run(recordScript, name, args).then((r) => ({
      applied: Number(r[0]) === 1,
      state: String(r[1]) as BreakerState,
      generation: Number(r[2]),
      until: Number(r[3]),
      failures: Number(r[4]),
      from: (String(r[5]) || null) as BreakerState | null,
    }));
  }

  peek(name: string): Promise<PeekResult> {
    return this.#run(peekScript, name, []).then((r) => ({
      state: String(r[0]) as BreakerState,
      generation: Number(r[1]),
      until: Number(r[2]),
    }));
  }

  async read(name: string, now: number, s: BreakerSettings): Promise<BreakerSnapshot> {
    const fields = await timed("redis", this.redis.hgetall<Fields>(this.key(name)));
    return snapshot(name, fields ?? {}, now, s);
  }

  /** Issued before anything is awaited, so it joins the caller's auto-pipeline. */
  #run(script: typeof acquireScript, name: string, args: (string | number)[]): Promise<Row> {
    return runScript(this.redis, script, [this.key(name)], args);
  }
}

/** A breaker's fields, named as in the Redis hash. */
type Fields = Record<string, string | number | undefined>;

const num = (v: unknown): number => {
  const n = Number(v);
  return Number.isFinite(n) ? n : 0;
};

function windowTotals(f: Fields, now: number, s: BreakerSettings) {
  const b = Math.floor(now / (s.windowMs / s.windowBuckets));
  let calls = 0;
  let failures = 0;
  for (let i = 0; i < s.windowBuckets; i++) {
    const t = f[`t${i}`];
    if (t === undefined) continue;
    if (num(t) > b - s.windowBuckets && num(t) <= b) {
      calls += num(f[`c${i}`]);
      failures += num(f[`f${i}`]);
    }
  }
  return { calls, failures };
}

/** What /health shows, read from the hash's fields. */
function snapshot(
  name: string,
  f: Fields,
  now: number,
  s: BreakerSettings,
): BreakerSnapshot {
  const state = (f.state as BreakerState | undefined) ?? "closed";
  const w = state === "closed" ? windowTotals(f, now, s) : { calls: 0, failures: 0 };
  return {
    name,
    state,
    generation: num(f.gen),
    failures: num(f.consec),
    open_until: state === "open" ? num(f.until) : null,
    window_calls: w.calls,
    window_failures: w.failures,
  };
}
