/**
 * A two-tier read-through cache: a bounded LRU per isolate (entries and bytes) in front of
 * Redis, with TTL, stale-while-revalidate (stale answers while exactly one refresh runs),
 * invalidation by key and by tag that reaches every isolate, and request coalescing so a
 * miss is computed once.
 *
 * Cross-isolate invalidation: every invalidation bumps a sequence number in Redis and logs
 * what it invalidated; before reading, an isolate compares its last seen sequence (one small
 * command, sent in the same pipeline as the request's other Redis work when issued in the
 * same tick) and drops what the log names. So a write is visible to the next read anywhere.
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import { runInBackground } from "../http/background.ts";
import { type Clock, systemClock } from "./clock.ts";
import { invalidateScript, invalidateTagsScript, logLength } from "./cache.lua.ts";
import { type Coalescer, RedisCoalescer, SingleFlight } from "./coalesce.ts";
import type { Sample } from "../http/metrics.ts";
import { runScript } from "../data/redis_script.ts";
import { timed } from "../http/timing.ts";

/** How one value is cached. */
export interface CacheOptions {
  /** Fresh for this long. */
  ttlS: number;
  /** Then served stale (while one refresh runs) for this much longer. Default 0. */
  staleS?: number;
  /** Names under which the entry can be invalidated together, e.g. `profile:<id>`. */
  tags?: string[];
  /**
   * `everywhere` (default): an invalidation reaches every isolate's local copy before its
   * next read, at the cost of one small Redis command per read. `ttl`: the entry is never
   * invalidated, only expires (shared feeds): local hits cost no round trip at all.
   */
  invalidation?: "everywhere" | "ttl";
}

interface Envelope<T = unknown> {
  v: T;
  /** fresh until, epoch ms */
  f: number;
  /** stale until, epoch ms */
  s: number;
  t?: string[];
  /** 1 when the entry only expires (`invalidation: "ttl"`). */
  o?: 1;
}

interface LocalEntry {
  env: Envelope;
  bytes: number;
  /** {@link contentVersion} of `env.v`. */
  version: string;
}

/**
 * A cached value and its version: a digest of the value's JSON, so the same in every isolate
 * that holds it, and changed by any change of the value (an ETag can be built on it without
 * hashing the response built from the value).
 */
export interface Versioned<T> {
  value: T;
  version: string;
}

/**
 * A 64-bit digest (two 32-bit multiply-xor lanes, cyrb53's mixing) and the length of `json`:
 * computed once per stored entry, not per read. Not cryptographic: an entry's versions are
 * compared with each other, never with an adversary's choice.
 */
export function contentVersion(json: string | undefined): string {
  const text = json ?? "";
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return `${text.length.toString(36)}-${(h2 >>> 0).toString(36)}${(h1 >>> 0).toString(36)}`;
}

/** Hit, miss and stale counts since the isolate started. */
export interface CacheStats {
  localHits: number;
  redisHits: number;
  misses: number;
  stale: number;
  refreshes: number;
  coalesced: number;
  invalidations: number;
}

/** The two-tier cache. One per isolate: `deps.cache` (shared/deps.ts). */
export class TwoTierCache {
  readonly stats: CacheStats = {
    localHits: 0,
    redisHits: 0,
    misses: 0,
    stale: 0,
    refreshes: 0,
    coalesced: 0,
    invalidations: 0,
  };
  readonly #local = new Map<string, LocalEntry>();
  #bytes = 0;
  #seenSeq: number | null = null;
  readonly #flights = new SingleFlight();
  #coalescerMade: RedisCoalescer | undefined;
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #clock: Clock;
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  readonly #disabled: boolean;

  constructor(
    options: {
      redis: Redis;
      /** Key prefix, e.g. `rockout:cache:`. */
      prefix: string;
      maxEntries?: number;
      maxBytes?: number;
      clock?: Clock;
      disabled?: boolean;
    },
  ) {
    this.#redis = options.redis;
    this.#prefix = options.prefix;
    this.#maxEntries = options.maxEntries ?? 2000;
    this.#maxBytes = options.maxBytes ?? 16 * 1024 * 1024;
    this.#clock = options.clock ?? systemClock;
    this.#disabled = options.disabled ?? false;
  }

  /** Misses are computed once across isolates too: the first computes, the others wait. */
  get #coalescer(): Coalescer {
    return this.#coalescerMade ??= new RedisCoalescer(this.#redis, `${this.#prefix}co:`);
  }

  /**
   * Resolves once the Redis calls of this cache's coalescing have settled: a lock claimed too
   * late to wait for is handed back after its load returned (tests count commands; shutdown).
   */
  async idle(): Promise<void> {
    await this.#coalescerMade?.idle();
  }

  /**
   * The value for `key`: from this isolate, else Redis, else `load()` (once per key at a time
   * in this isolate), stored in both tiers. Stale values are served while one refresh runs.
   */
  async get<T>(key: string, options: CacheOptions, load: () => Promise<T>): Promise<T> {
    return (await this.getVersioned(key, options, load)).value;
  }

  /**
   * {@link get}, with the version of the value returned: the version of exactly the value
   * served, a stale one included (the refresh that replaces it brings its own).
   */
  async getVersioned<T>(
    key: string,
    options: CacheOptions,
    load: () => Promise<T>,
  ): Promise<Versioned<T>> {
    if (this.#disabled) {
      const value = await load();
      return { value, version: contentVersion(JSON.stringify(value)) };
    }
    let local = this.#localGet(key);
    if (!local?.env.o) {
      await this.sync();
      local = this.#localGet(key);
    }
    const served = this.#fromLocal(key, options, load, local);
    if (served) return served;
    const stored = await timed("redis", this.#redis.get<Envelope<T>>(this.#valueKey(key)))
      .catch(() => null);
    return await this.#fromStored(key, options, load, stored);
  }

  /**
   * {@link get} of many keys at once, one promise per key (in `keys`' order), each settling as
   * `get` would: one sync for all of them (not one per key), local hits answered at once, and
   * the rest read from Redis with one MGET; what Redis lacks is loaded key by key (`load`, with
   * each key and its index), so a caller that batches its loads still does. A warm read of any
   * number of keys costs one Redis command (none when every entry is `invalidation: "ttl"`).
   */
  getMany<T>(
    keys: readonly string[],
    options: (key: string, index: number) => CacheOptions,
    load: (key: string, index: number) => Promise<T>,
  ): Promise<T>[] {
    if (this.#disabled) return keys.map((key, i) => load(key, i));
    const reads = this.#getMany(keys, options, load);
    return keys.map((_, i) => reads.then((all) => all[i]).then((r) => r.value));
  }

  async #getMany<T>(
    keys: readonly string[],
    options: (key: string, index: number) => CacheOptions,
    load: (key: string, index: number) => Promise<T>,
  ): Promise<Promise<Versioned<T>>[]> {
    let locals = keys.map((key) => this.#localGet(key));
    if (locals.some((local) => !local?.env.o)) {
      await this.sync();
      locals = keys.map((key) => this.#localGet(key));
    }
    // Served from this isolate now, right after the sync: no await between them, as in get().
    const served = keys.map((key, i) =>
      this.#fromLocal(key, options(key, i), () => load(key, i), locals[i])
    );
    const ask = keys.filter((_, i) => !served[i]);
    const stored: Promise<(Envelope<T> | null)[]> = ask.length
      ? timed(
        "redis",
        this.#redis.mget<(Envelope<T> | null)[]>(...ask.map((k) => this.#valueKey(k))),
      )
        .catch(() => [])
      : Promise.resolve([]);
    let asked = 0;
    return keys.map((key, i) => {
      if (served[i]) return Promise.resolve(served[i]);
      const at = asked++;
      return stored.then((found) =>
        this.#fromStored(key, options(key, i), () => load(key, i), found[at] ?? null)
      );
    });
  }

  /** The local entry's value when it may be served (stale ones start a refresh). */
  #fromLocal<T>(
    key: string,
    options: CacheOptions,
    load: () => Promise<T>,
    local: LocalEntry | undefined,
  ): Versioned<T> | undefined {
    const now = this.#clock();
    if (local && local.env.f > now) {
      this.stats.localHits++;
      return { value: local.env.v as T, version: local.version };
    }
    if (local && local.env.s > now) {
      this.stats.stale++;
      this.#refreshInBackground(key, options, load);
      return { value: local.env.v as T, version: local.version };
    }
    return undefined;
  }

  /** Redis's entry (`stored`, null when absent or unreadable) if it may be served, else a load. */
  async #fromStored<T>(
    key: string,
    options: CacheOptions,
    load: () => Promise<T>,
    stored: Envelope<T> | null,
  ): Promise<Versioned<T>> {
    const now = this.#clock();
    if (stored && stored.f > now) {
      this.stats.redisHits++;
      return { value: stored.v, version: this.#localSet(key, stored) };
    }
    if (stored && stored.s > now) {
      this.stats.stale++;
      const version = this.#localSet(key, stored);
      this.#refreshInBackground(key, options, load);
      return { value: stored.v, version };
    }
    return await this.#load(key, options, load, "misses");
  }

  /** Drops `key` from every tier of every isolate. */
  async invalidate(key: string): Promise<void> {
    this.#drop(key);
    this.stats.invalidations++;
    await runScript(this.#redis, invalidateScript, [
      this.#valueKey(key),
      this.#seqKey,
      this.#logKey,
    ], ["key", key]);
  }

  /** Drops every entry stored with `tag`, in every tier of every isolate. */
  async invalidateTag(tag: string): Promise<void> {
    for (const [key, entry] of this.#local) if (entry.env.t?.includes(tag)) this.#drop(key);
    this.stats.invalidations++;
    const members = await timed("redis", this.#redis.smembers(this.#tagKey(tag)));
    await runScript(
      this.#redis,
      invalidateScript,
      [...members.map((k) => this.#valueKey(k)), this.#tagKey(tag), this.#seqKey, this.#logKey],
      ["tag", tag],
    );
  }

  /**
   * Drops every entry stored with any of `tags`, in every tier of every isolate, in one round
   * trip (the tags' members are read inside the script: no SMEMBERS request before it).
   */
  async invalidateTags(tags: readonly string[]): Promise<void> {
    if (!tags.length) return;
    for (const [key, entry] of this.#local) {
      if (entry.env.t?.some((t) => tags.includes(t))) this.#drop(key);
    }
    this.stats.invalidations += tags.length;
    await runScript(
      this.#redis,
      invalidateTagsScript,
      [this.#seqKey, this.#logKey, ...tags.map((tag) => this.#tagKey(tag))],
      [this.#valueKey(""), ...tags],
    );
  }

  /**
   * Applies invalidations made elsewhere since this isolate last looked: one GET of the
   * sequence when nothing changed, one LRANGE more when something did.
   */
  async sync(): Promise<void> {
    if (this.#local.size === 0 && this.#seenSeq !== null) return;
    try {
      await this.#sync(this.#redis);
    } catch {
      // Can't tell what was invalidated: serve nothing from this isolate until we can.
      this.#clearLocal();
      this.#seenSeq = null;
    }
  }

  async #sync(redis: Redis): Promise<void> {
    const seq = Number(await timed("redis", redis.get<number>(this.#seqKey)) ?? 0);
    const seen = this.#seenSeq;
    if (seen === null || seq === seen) {
      this.#seenSeq = Math.max(seq, seen ?? 0);
      return;
    }
    if (seq < seen || seq - seen > logLength) {
      this.#clearLocal(); // the log no longer covers the gap (or Redis was reset)
    } else {
      const entries = await timed(
        "redis",
        redis.lrange<string>(this.#logKey, 0, seq - seen - 1),
      );
      for (const line of entries) {
        const [n, kind, name] = String(line).split("\t");
        if (Number(n) <= seen) continue;
        if (kind === "key") this.#drop(name);
        else for (const [key, e] of this.#local) if (e.env.t?.includes(name)) this.#drop(key);
      }
    }
    this.#seenSeq = Math.max(seq, this.#seenSeq ?? 0);
  }

  /** Loads once per key in this isolate; failures are shared with waiters, never cached. */
  #load<T>(
    key: string,
    options: CacheOptions,
    load: () => Promise<T>,
    count: "misses" | "refreshes",
  ): Promise<Versioned<T>> {
    const { promise, shared } = this.#flights.run(key, async () => {
      this.stats[count]++;
      const value = await this.#coalescer.run(`load:${key}`, load);
      const now = this.#clock();
      const env: Envelope<T> = {
        v: value,
        f: now + options.ttlS * 1000,
        s: now + (options.ttlS + (options.staleS ?? 0)) * 1000,
        ...(options.tags?.length ? { t: options.tags } : {}),
        ...(options.invalidation === "ttl" ? { o: 1 as const } : {}),
      };
      const version = this.#localSet(key, env);
      await this.#store(key, env).catch(() => {});
      return { value, version };
    });
    if (shared) this.stats.coalesced++;
    return promise;
  }

  #store(key: string, env: Envelope): Promise<unknown> {
    const redis = this.#redis;
    const px = Math.max(1, env.s - this.#clock());
    const writes: Promise<unknown>[] = [redis.set(this.#valueKey(key), env, { px })];
    for (const tag of env.t ?? []) {
      writes.push(
        redis.sadd(this.#tagKey(tag), key),
        redis.pexpire(this.#tagKey(tag), px + 60_000),
      );
    }
    return timed("redis", Promise.all(writes));
  }

  #refreshInBackground<T>(key: string, options: CacheOptions, load: () => Promise<T>): void {
    if (this.#flights.has(key)) return; // exactly one refresh at a time
    runInBackground(`cache refresh ${key}`, this.#load(key, options, load, "refreshes"));
  }

  #localGet(key: string): LocalEntry | undefined {
    const entry = this.#local.get(key);
    if (!entry) return undefined;
    if (entry.env.s <= this.#clock()) {
      this.#drop(key);
      return undefined;
    }
    this.#local.delete(key); // re-insert: Map order is the LRU order
    this.#local.set(key, entry);
    return entry;
  }

  /** Keeps `env` in this isolate (unless too large); returns its version. */
  #localSet(key: string, env: Envelope): string {
    this.#drop(key);
    const json = JSON.stringify(env.v);
    const version = contentVersion(json);
    const bytes = json?.length ?? 0;
    if (bytes > this.#maxBytes / 4) return version; // one value must not flush the whole tier
    this.#local.set(key, { env, bytes, version });
    this.#bytes += bytes;
    while (this.#local.size > this.#maxEntries || this.#bytes > this.#maxBytes) {
      this.#drop(this.#local.keys().next().value!);
    }
    return version;
  }

  #drop(key: string): void {
    const entry = this.#local.get(key);
    if (!entry) return;
    this.#local.delete(key);
    this.#bytes -= entry.bytes;
  }

  #clearLocal(): void {
    this.#local.clear();
    this.#bytes = 0;
  }

  /** Entries and bytes held in this isolate. */
  get localSize(): { entries: number; bytes: number } {
    return { entries: this.#local.size, bytes: this.#bytes };
  }

  /** Shorthand for `get(key, { ttlS, invalidation: "ttl" }, load)`: expires, never invalidated. */
  cached<T>(key: string, ttlS: number, load: () => Promise<T>): Promise<T> {
    return this.get(key, { ttlS, invalidation: "ttl" }, load);
  }

  /** Metric samples of this cache's counts. */
  samples(): Sample[] {
    return Object.entries(this.stats).map(([event, value]) => ({
      name: "cache_events_total",
      labels: { event },
      value,
      type: "counter" as const,
      help: "Two-tier cache hits (local, redis), misses, stale answers, refreshes, coalesced loads",
    }));
  }

  #valueKey(key: string) {
    return `${this.#prefix}v:${key}`;
  }
  #tagKey(tag: string) {
    return `${this.#prefix}t:${tag}`;
  }
  get #seqKey() {
    return `${this.#prefix}inv:seq`;
  }
  get #logKey() {
    return `${this.#prefix}inv:log`;
  }
}
