/**
 * Helpers the circuit breaker tests share (shared/resilience/breaker_test.ts,
 * breaker_store_test.ts): a Redis store with its request count, a test clock's start, and
 * calls that succeed or fail through a breaker.
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";
import { type TestRedis, testRedis } from "./test_redis.ts";
import {
  type BreakerStore,
  type CircuitBreaker,
  CircuitOpenError,
  RedisBreakerStore,
} from "../../shared/resilience/breaker.ts";

/** A store for one test, and how many HTTP requests it has made. */
export interface Fixture {
  store: BreakerStore;
  requests(): number;
  redis?: TestRedis;
  close(): Promise<void>;
}

/** A {@link Fixture} on the test Redis (a bridge and key prefix of its own). */
export async function redisFixture(): Promise<Fixture> {
  const t = await testRedis();
  return {
    store: new RedisBreakerStore(t.redis, `${t.prefix}breaker:`),
    requests: () => t.bridge.stats.requests,
    redis: t,
    close: () => t.close(),
  };
}

/** The test clock's start. */
export const T0 = 1_900_000_000_000;
/** A minute: how long a breaker stays open by default. */
export const MIN = 60_000;

/** One call through `b` that fails. */
export async function failure(b: CircuitBreaker): Promise<void> {
  await b.record("failure", await b.acquire());
}
/** One call through `b` that succeeds. */
export async function success(b: CircuitBreaker): Promise<void> {
  await b.record("success", await b.acquire());
}
/** Runs one call per letter: F fails, S succeeds. */
export async function calls(b: CircuitBreaker, pattern: string): Promise<void> {
  for (const c of pattern) await (c === "F" ? failure(b) : success(b));
}
/** `b`'s state as the store has it. */
export async function stateOf(b: CircuitBreaker): Promise<string> {
  return (await b.state()).state;
}
/** Asserts that `p` rejects with a {@link CircuitOpenError} in `state`; returns the error. */
export async function assertOpenError(
  p: Promise<unknown>,
  state = "open",
): Promise<CircuitOpenError> {
  try {
    await p;
  } catch (err) {
    assert(err instanceof CircuitOpenError, `not a CircuitOpenError: ${err}`);
    assertEquals(err.state, state);
    return err;
  }
  throw new Error("expected a CircuitOpenError");
}
