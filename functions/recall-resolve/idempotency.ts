/**
 * `Idempotency-Key` for resolves: the first successful answer per (user, key) is kept for
 * 24 h and replayed as is (no provider, database or cache work), and concurrent duplicates
 * share one execution. A key reused with a different request is refused (422), as the IETF
 * idempotency-key draft asks.
 *
 * Storage: Redis (one JSON value per user and key). Concurrent duplicates are coalesced
 * (shared/resilience/coalesce.ts: single-flight here, a Redis lock across isolates), and the leader
 * re-reads the store before running, so a duplicate arriving just as the first one finished
 * replays instead of running again.
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import type { Coalescer } from "../../shared/resilience/coalesce.ts";
import type { Deps } from "../../shared/deps.ts";
import { ProblemError } from "../../shared/http/problem.ts";
import type { RedisKeys } from "../../shared/data/redis.ts";
import { timed } from "../../shared/http/timing.ts";

/** How long an answer is replayed. */
export const idempotencyTtlS = 24 * 60 * 60;

/** What is kept for one key. */
export interface StoredAnswer<T> {
  /** Fingerprint of the request that produced it. */
  fp: string;
  body: T;
}

/** A well-formed key: 1–255 visible ASCII characters. */
export function validIdempotencyKey(key: string): boolean {
  return /^[\x21-\x7e]{1,255}$/.test(key);
}

/** Answers kept per (scope, key) in one Redis, duplicates coalesced (`deps`' Redis). */
export class Idempotency {
  readonly #redis: Redis;
  readonly #redisKey: RedisKeys;
  readonly #coalescer: Coalescer;

  constructor(deps: Pick<Deps, "redis" | "redisKey" | "coalescer">) {
    this.#redis = deps.redis;
    this.#redisKey = deps.redisKey;
    this.#coalescer = deps.coalescer;
  }

  /**
   * Runs `work` once per (`scope`, `key`): later calls within 24 h, and calls concurrent with
   * the first, get its answer with `replayed: true`. `fingerprint` identifies the request: the
   * same key with another fingerprint is a 422. Failures are not kept (a retry runs again).
   */
  async run<T>(
    scope: string,
    key: string,
    fingerprint: string,
    work: () => Promise<T>,
    options: { waitMs: number; signal?: AbortSignal },
  ): Promise<{ body: T; replayed: boolean }> {
    const storeKey = this.#redisKey("idem", scope, key);
    const check = (stored: StoredAnswer<T>) => {
      if (stored.fp !== fingerprint) {
        throw new ProblemError(
          422,
          "invalid_parameter",
          "Idempotency-Key: already used for a different request",
          { extensions: { invalid_params: [{ name: "Idempotency-Key", reason: "reused" }] } },
        );
      }
      return stored.body;
    };
    const earlier = await this.#load<T>(storeKey);
    if (earlier) return { body: check(earlier), replayed: true };
    let ran = false;
    const answer = await this.#coalescer.run(`idem:${scope}:${key}`, async () => {
      const meanwhile = await this.#load<T>(storeKey);
      if (meanwhile) return meanwhile;
      ran = true;
      const stored: StoredAnswer<T> = { fp: fingerprint, body: await work() };
      await this.#store(storeKey, stored);
      return stored;
    }, {
      lockTtlMs: options.waitMs + 5_000,
      waitMs: options.waitMs,
      resultTtlMs: 10_000,
      signal: options.signal,
    });
    return { body: check(answer), replayed: !ran };
  }

  #load<T>(key: string): Promise<StoredAnswer<T> | null> {
    return timed("redis", this.#redis.get<StoredAnswer<T>>(key));
  }

  async #store<T>(key: string, value: StoredAnswer<T>): Promise<void> {
    await timed("redis", this.#redis.set(key, value, { ex: idempotencyTtlS }));
  }
}
