/**
 * The one way our Lua runs in Redis. Each script is defined once (`lua(name, text)`, beside
 * the TypeScript that calls it, as a TS string: the edge runtime can't import raw `.lua`) and
 * run with {@link runScript}: EVALSHA, and one EVAL when Redis doesn't know the script yet
 * (a fresh server, or after SCRIPT FLUSH). `@upstash/ratelimit` runs its own scripts.
 *
 * Why not the client's `createScript()`: it hashes with WebCrypto, asynchronously, so the first
 * EVALSHA leaves a tick late and misses the auto-pipeline of the request's other commands.
 * Here the sha1 is computed once at module load (node:crypto, synchronous).
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { Redis } from "@upstash/redis";
import { timed } from "../http/timing.ts";

/** A Lua script with its sha1, computed at load. `R` is what the script returns. */
export interface LuaScript<R> {
  /** For logs and errors, e.g. `breaker.acquire`. */
  readonly name: string;
  readonly text: string;
  readonly sha: string;
  /** Phantom: ties the script to its reply type. */
  readonly _reply?: R;
}

/** Defines a script (sha1 computed now, once). */
export function lua<R>(name: string, text: string): LuaScript<R> {
  return { name, text, sha: createHash("sha1").update(text).digest("hex") };
}

/**
 * Runs `script` with `keys` and `args`: EVALSHA issued before anything is awaited (so it joins
 * the caller's auto-pipeline), one EVAL on NOSCRIPT. Counted in the request's Server-Timing
 * `redis`.
 */
export function runScript<R>(
  redis: Redis,
  script: LuaScript<R>,
  keys: string[],
  args: (string | number)[],
): Promise<R> {
  const argv = args.map(String);
  return timed(
    "redis",
    redis.evalsha<string[], R>(script.sha, keys, argv).catch((err) => {
      if (!(err instanceof Error) || !/NOSCRIPT/i.test(err.message)) throw err;
      return redis.eval<string[], R>(script.text, keys, argv);
    }),
  );
}
