/**
 * `Idempotency-Key` for resolves: the first successful answer per (user, key) is kept for
 * 24 h and replayed as is (no provider, database or cache work), and concurrent duplicates
 * share one execution. A key reused with a different request is refused (422), as the IETF
 * idempotency-key draft asks.
 *
 * Storage: Redis (one JSON value per user and key). Concurrent duplicates are coalesced
 * (shared/coalesce.ts: single-flight here, a Redis lock across isolates), and the leader
 * re-reads the store before running, so a duplicate arriving just as the first one finished
 * replays instead of running again.
 *
 * @module
 */
import { coalesce } from "../../shared/coalesce.ts";
import { ProblemError } from "../../shared/problem.ts";
import { isolateRedis, redisKey } from "../../shared/redis.ts";
import { timed } from "../../shared/timing.ts";

/** How long an answer is replayed. */
export const idempotencyTtlS = 24 * 60 * 60;

/** What is kept for one key. */
export interface StoredAnswer<T> {
  /** Fingerprint of the request that produced it. */
  fp: string;
  body: T;
}

function load<T>(key: string): Promise<StoredAnswer<T> | null> {
  return timed("redis", isolateRedis().get<StoredAnswer<T>>(key));
}

async function store<T>(key: string, value: StoredAnswer<T>): Promise<void> {
  await timed("redis", isolateRedis().set(key, value, { ex: idempotencyTtlS }));
}

/** A well-formed key: 1–255 visible ASCII characters. */
export function validIdempotencyKey(key: string): boolean {
  return /^[\x21-\x7e]{1,255}$/.test(key);
}

/**
 * Runs `run` once per (`scope`, `key`): later calls within 24 h, and calls concurrent with the
 * first, get its answer with `replayed: true`. `fingerprint` identifies the request: the same
 * key with another fingerprint is a 422. Failures are not kept (a retry runs again).
 */
export async function idempotent<T>(
  scope: string,
  key: string,
  fingerprint: string,
  run: () => Promise<T>,
  options: { waitMs: number; signal?: AbortSignal },
): Promise<{ body: T; replayed: boolean }> {
  const storeKey = redisKey("idem", scope, key);
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
  const earlier = await load<T>(storeKey);
  if (earlier) return { body: check(earlier), replayed: true };
  let ran = false;
  const answer = await coalesce(`idem:${scope}:${key}`, async () => {
    const meanwhile = await load<T>(storeKey);
    if (meanwhile) return meanwhile;
    ran = true;
    const stored: StoredAnswer<T> = { fp: fingerprint, body: await run() };
    await store(storeKey, stored);
    return stored;
  }, {
    lockTtlMs: options.waitMs + 5_000,
    waitMs: options.waitMs,
    resultTtlMs: 10_000,
    signal: options.signal,
  });
  return { body: check(answer), replayed: !ran };
}
