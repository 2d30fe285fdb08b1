/**
 * Benchmark (not a test): what the per-request checks cost. A request to an LLM route checks
 * its rate limit (two windows) and the provider's circuit breaker before doing anything; we
 * count the HTTP requests that reach Redis (through the Upstash REST bridge) and time the
 * checks, warm, for: all closed and allowed; an identifier the ephemeral cache already knows
 * is exhausted; an open circuit.
 *
 * Usage: deno run -A scripts/bench/bench_overhead.ts [iterations]   (REDIS_URL, default local)
 *
 * @module
 */
import {
  CircuitBreaker,
  CircuitOpenError,
  RedisBreakerStore,
} from "../../shared/resilience/breaker.ts";
import { RateLimiter } from "../../shared/resilience/ratelimit.ts";
import { deleteKeys, testRedis } from "../testing/test_redis.ts";

const iterations = Number(Deno.args[0] ?? 2000);
const fixture = await testRedis(Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379");
const { redis, prefix, bridge } = fixture;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function measure(name: string, check: (i: number) => Promise<unknown>) {
  for (let i = 0; i < 50; i++) await check(i); // warm: scripts loaded, connections open
  const times: number[] = [];
  const before = bridge.stats.requests;
  for (let i = 0; i < iterations; i++) {
    const start = performance.now();
    await check(i);
    times.push(performance.now() - start);
  }
  const requests = (bridge.stats.requests - before) / iterations;
  times.sort((a, b) => a - b);
  return {
    case: name,
    redis_http_requests_per_request: Math.round(requests * 100) / 100,
    p50_ms: Math.round(percentile(times, 50) * 1000) / 1000,
    p99_ms: Math.round(percentile(times, 99) * 1000) / 1000,
  };
}

const limiter = new RateLimiter(
  {
    name: "bench",
    windows: [{ limit: 1_000_000, windowS: 60 }, { limit: 10_000_000, windowS: 3600 }],
    failOpen: false,
    decisionMs: 1000,
  },
  { redis, prefix: `${prefix}rl:` },
);
const exhausted = new RateLimiter(
  { name: "tiny", windows: [{ limit: 1, windowS: 3600 }], failOpen: false, decisionMs: 1000 },
  { redis, prefix: `${prefix}rl:` },
);
const store = new RedisBreakerStore(redis, `${prefix}breaker:`);
const closed = new CircuitBreaker({ name: "closed", store });
const open = new CircuitBreaker({ name: "open", store, failureThreshold: 1 });
await open.record("failure", await open.acquire());

const results = [
  await measure("rate limit (2 windows) + breaker, allowed", async (i) => {
    const [decision, permit] = await Promise.all([
      limiter.check(`user-${i % 100}`),
      closed.acquire(),
    ]);
    return [decision, permit];
  }),
  await measure("rate limit only, allowed", (i) => limiter.check(`user-${i % 100}`)),
  await measure("identifier known exhausted (ephemeral cache)", () => exhausted.check("abuser")),
  await measure("open circuit", () =>
    open.acquire().catch((err) => {
      if (!(err instanceof CircuitOpenError)) throw err;
    })),
];
console.table(results);
console.log(JSON.stringify({ iterations, results }));
await deleteKeys(redis, `${prefix}*`);
await fixture.close();
