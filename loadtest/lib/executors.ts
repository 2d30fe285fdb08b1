/**
 * How iterations are scheduled, as in k6:
 * - `constant-arrival-rate` (open model): iterations start at a fixed rate whatever the
 *   latency, so slow answers can't hide by slowing the load (no coordinated omission); an
 *   iteration that finds every VU busy is counted in `dropped_iterations`.
 * - `ramping-vus` (closed model): VUs follow stages, each looping iteration → think time.
 *
 * @module
 */
import type { LoadClient } from "./client.ts";
import type { Registry } from "./stats.ts";

/** What one iteration gets: `vu` is the VU number, `iteration` the iteration's number. */
export interface IterationContext<D> {
  client: LoadClient;
  data: D;
  vu: number;
  iteration: number;
}

/** One iteration of a scenario part. */
export type Exec<D> = (ctx: IterationContext<D>) => Promise<void>;

/** Open model. */
export interface ConstantArrivalRate {
  executor: "constant-arrival-rate";
  /** Iterations per second. */
  rate: number;
  durationS: number;
  /** Concurrency cap: an iteration that would need more is dropped. */
  maxVUs: number;
}

/** Closed model with stages. */
export interface RampingVus {
  executor: "ramping-vus";
  startVUs?: number;
  stages: { durationS: number; target: number }[];
  /** Pause between a VU's iterations, uniformly random in [min, max] ms. */
  thinkTimeMs?: [number, number];
  /** How long a VU may take to finish its iteration once ramped down. */
  gracefulStopS?: number;
}

/** A scenario's schedule. */
export type Schedule = ConstantArrivalRate | RampingVus;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `exec` on `schedule`, recording iterations and drops in `metrics`. */
export async function runSchedule<D>(
  schedule: Schedule,
  exec: Exec<D>,
  context: { client: LoadClient; data: D },
  metrics: Registry,
  onError: (err: unknown) => void,
): Promise<void> {
  const iterate = async (vu: number, iteration: number) => {
    const start = performance.now();
    try {
      await exec({ ...context, vu, iteration });
    } catch (err) {
      onError(err);
    }
    metrics.counter("iterations").add();
    metrics.trend("iteration_duration").add(performance.now() - start);
  };
  if (schedule.executor === "constant-arrival-rate") {
    await constantArrivalRate(schedule, iterate, metrics);
  } else {
    await rampingVus(schedule, iterate, metrics);
  }
}

async function constantArrivalRate(
  s: ConstantArrivalRate,
  iterate: (vu: number, i: number) => Promise<void>,
  metrics: Registry,
): Promise<void> {
  const free = Array.from({ length: s.maxVUs }, (_, i) => s.maxVUs - 1 - i);
  const running = new Set<Promise<void>>();
  const total = Math.floor(s.rate * s.durationS);
  const start = performance.now();
  let started = 0;
  let peak = 0;
  while (started < total) {
    const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * s.rate) + 1);
    for (; started < due; started++) {
      const vu = free.pop();
      if (vu === undefined) {
        metrics.counter("dropped_iterations").add();
        continue;
      }
      const p: Promise<void> = iterate(vu, started).finally(() => {
        free.push(vu);
        running.delete(p);
      });
      running.add(p);
      peak = Math.max(peak, running.size);
    }
    const next = start + (started / s.rate) * 1000;
    await sleep(Math.max(0, Math.min(50, next - performance.now())));
  }
  await Promise.all(running);
  metrics.counter("vus_max").add(peak);
}

async function rampingVus(
  s: RampingVus,
  iterate: (vu: number, i: number) => Promise<void>,
  metrics: Registry,
): Promise<void> {
  const [thinkMin, thinkMax] = s.thinkTimeMs ?? [0, 0];
  const loops = new Map<number, Promise<void>>();
  let target = s.startVUs ?? 0;
  let peak = 0;
  const loop = async (vu: number) => {
    for (let i = 0; vu < target; i++) {
      await iterate(vu, i);
      if (thinkMax > 0 && vu < target) {
        await sleep(thinkMin + Math.random() * (thinkMax - thinkMin));
      }
    }
  };
  const scale = () => {
    for (let vu = 0; vu < target; vu++) {
      if (!loops.has(vu)) {
        const p = loop(vu).finally(() => loops.delete(vu));
        loops.set(vu, p);
      }
    }
    peak = Math.max(peak, loops.size);
  };
  const start = performance.now();
  let from = target;
  let stageStart = 0;
  for (const stage of s.stages) {
    const stageMs = stage.durationS * 1000;
    while (true) {
      const t = performance.now() - start - stageStart;
      if (t >= stageMs) break;
      target = Math.round(from + (stage.target - from) * (t / stageMs));
      scale();
      await sleep(Math.min(100, stageMs - t));
    }
    target = stage.target;
    scale();
    from = stage.target;
    stageStart += stageMs;
  }
  target = 0; // ramp down: loops end after their current iteration
  const grace = sleep((s.gracefulStopS ?? 30) * 1000).then(() => "timeout" as const);
  await Promise.race([Promise.all(loops.values()), grace]);
  metrics.counter("vus_max").add(peak);
}
