/**
 * Where a request's time goes: database, Redis and upstream durations and call counts,
 * accumulated per request (through Hono's context storage, so db.ts and redis.ts need no
 * context argument) and reported in `Server-Timing`.
 *
 * @module
 */
import type { MiddlewareHandler } from "hono";
import { tryGetContext } from "hono/context-storage";
import { setMetric } from "hono/timing";

/**
 * The dependencies whose time we report. `searchLane` is not a dependency of its own but the
 * part of `db` time (wait for a connection and transaction) spent in the pool's search lane,
 * which has its own bounds: admission leaves it out of its latency samples (see http.ts).
 */
export type Dependency = "db" | "redis" | "upstream" | "searchLane";

/** Time (ms) and calls per dependency for one request. */
export type RequestUsage = Record<Dependency, { ms: number; calls: number }>;

function currentUsage(): RequestUsage | undefined {
  return tryGetContext<{ Variables: { usage: RequestUsage } }>()?.var.usage;
}

/** Counts one call to `dep` in the current request (no-op outside a request). */
export function countCall(dep: Dependency, calls = 1): void {
  const usage = currentUsage();
  if (usage) usage[dep].calls += calls;
}

/** Awaits `work` (`calls` calls to `dep`), adding its duration to the request's `dep` time. */
export async function timed<T>(dep: Dependency, work: Promise<T>, calls = 1): Promise<T> {
  const usage = currentUsage();
  if (!usage) return await work;
  usage[dep].calls += calls;
  const start = performance.now();
  try {
    return await work;
  } finally {
    usage[dep].ms += performance.now() - start;
  }
}

/** Sets up `c.var.usage` and writes it into Server-Timing (after Hono's `timing()`). */
export function usageTiming(): MiddlewareHandler<{ Variables: { usage: RequestUsage } }> {
  return async (c, next) => {
    const usage: RequestUsage = {
      db: { ms: 0, calls: 0 },
      redis: { ms: 0, calls: 0 },
      upstream: { ms: 0, calls: 0 },
      searchLane: { ms: 0, calls: 0 },
    };
    c.set("usage", usage);
    await next();
    for (const dep of ["db", "redis", "upstream"] as const) {
      // deno-lint-ignore no-explicit-any
      setMetric(c as any, dep, usage[dep].ms, `${usage[dep].calls} calls`);
    }
  };
}
