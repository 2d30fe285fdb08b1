/**
 * Read-through caching with request coalescing: a small per-isolate tier in front of Redis,
 * and single-flight so concurrent misses for one key share one load.
 *
 * @module
 */
import { config } from "./config.ts";
import { redis, redisKey } from "./redis.ts";
import { timed } from "./timing.ts";

interface Entry {
  value: unknown;
  expiresAt: number;
}

const maxLocalEntries = 1000;
const local = new Map<string, Entry>();
const inFlight = new Map<string, Promise<unknown>>();

/** Counts since the isolate started (exported in metrics). */
export const cacheStats = { hits: 0, misses: 0, coalesced: 0 };

function localGet(key: string): Entry | undefined {
  const entry = local.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt <= Date.now()) {
    local.delete(key);
    return undefined;
  }
  local.delete(key); // re-insert: Map order is our LRU order
  local.set(key, entry);
  return entry;
}

function localSet(key: string, value: unknown, ttlS: number): void {
  local.set(key, { value, expiresAt: Date.now() + ttlS * 1000 });
  if (local.size > maxLocalEntries) local.delete(local.keys().next().value!);
}

/**
 * Returns the cached value for `key`, or loads, stores (`ttlS` seconds, both tiers) and
 * returns it. Concurrent callers in this isolate share one load; failures are shared with
 * them but never cached.
 */
export function cached<T>(key: string, ttlS: number, load: () => Promise<T>): Promise<T> {
  if (config.cacheDisabled) return load();
  const hit = localGet(key);
  if (hit) {
    cacheStats.hits++;
    return Promise.resolve(hit.value as T);
  }
  const pending = inFlight.get(key);
  if (pending) {
    cacheStats.coalesced++;
    return pending as Promise<T>;
  }
  const work = (async () => {
    const fullKey = redisKey("cache", key);
    if (redis) {
      const stored = await timed("redis", redis.get<T>(fullKey)).catch(() => null);
      if (stored !== null) {
        cacheStats.hits++;
        localSet(key, stored, ttlS);
        return stored;
      }
    }
    cacheStats.misses++;
    const value = await load();
    localSet(key, value, ttlS);
    if (redis) await timed("redis", redis.set(fullKey, value, { ex: ttlS })).catch(() => {});
    return value;
  })();
  inFlight.set(key, work);
  work.finally(() => inFlight.delete(key)).catch(() => {});
  return work;
}
