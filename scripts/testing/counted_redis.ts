/**
 * A Redis whose commands a test can count as Upstash bills them: a `redis-server` of the
 * test's own (INFO commandstats is server-wide, so nobody else may use it) behind the Upstash
 * REST bridge, whose HTTP requests are counted too.
 *
 *   await using redis = await countedRedis();
 *   const deps = env.withEnv(redis.env); // a function's deps on this Redis
 *   const cost = await redis.cost(async () => { …; return requests; });
 *
 * @module
 */
import type { Env } from "../../shared/config.ts";
import { type CommandCalls, CommandCounter, commandDelta, totalCalls } from "../bench/costs.ts";
import { freePort, startRedisServer } from "../dev/local_services.ts";
import { type TestRedis, testRedis } from "./test_redis.ts";

/** What one measured run cost, per request. */
export interface RedisCost {
  /** Commands per request, a script's inner calls included, INFO left out. */
  commands: number;
  /** HTTP requests to the bridge per request. */
  http: number;
  /** Every command of the run, by name (totals, not per request). */
  calls: CommandCalls;
}

/** The counted Redis of one test. */
export interface CountedRedis extends TestRedis {
  /** `UPSTASH_REDIS_REST_URL`/`TOKEN` of the bridge: lay it over a test env's (`withEnv`). */
  env: Env;
  /** Runs `run` (which answers how many requests it made) and what they cost per request. */
  cost(run: () => Promise<number>): Promise<RedisCost>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts the server, the bridge and the counter; `close()` stops all three. */
export async function countedRedis(): Promise<CountedRedis> {
  const server = await startRedisServer(freePort());
  let fixture: TestRedis;
  try {
    fixture = await testRedis(server.url);
  } catch (err) {
    await server.stop();
    throw err;
  }
  const counter = new CommandCounter(server.url);
  const close = async () => {
    await counter.close();
    await fixture.bridge.close().catch(() => {});
    await server.stop();
  };
  return {
    ...fixture,
    env: {
      UPSTASH_REDIS_REST_URL: fixture.bridge.url,
      UPSTASH_REDIS_REST_TOKEN: fixture.bridge.token,
    },
    async cost(run) {
      const [calls0, http0] = [await counter.snapshot(), fixture.bridge.stats.requests];
      const n = await run();
      const http = fixture.bridge.stats.requests - http0;
      const calls = commandDelta(calls0, await counter.snapshot());
      return { commands: totalCalls(calls) / n, http: http / n, calls };
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
