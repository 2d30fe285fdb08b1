/**
 * The sliding-window counters behind rate limits: Redis through `@upstash/ratelimit`
 * ({@link RedisWindowStore}, with an exact retry time on refusal), and the same approximation
 * in this process's memory ({@link MemoryWindowStore}: the embedded default's store and the
 * isolate's own limiter when Redis cannot decide in time). One store counts one window of a
 * policy; the policies and the middleware are in ratelimit.ts.
 *
 * @module
 */
import { Ratelimit } from "@upstash/ratelimit";
import type { Redis } from "@upstash/redis";
import { type Clock, systemClock } from "./clock.ts";

/** One window of a policy. */
export interface RateWindow {
  limit: number;
  windowS: number;
}

/** What one window decided. */
export interface WindowDecision {
  success: boolean;
  remaining: number;
  /** Epoch ms at which a refused request would pass (now when allowed). */
  retryAt: number;
  /** Epoch ms at which the current window ends. */
  reset: number;
}

/**
 * When the weighted two-window count `floor(previous × (1 − elapsed)) + current` first drops
 * below `limit` (the formula @upstash/ratelimit's slidingWindow uses), as epoch ms. Without it
 * Retry-After could only say "next window", which is often far too late or too early.
 */
export function slidingWindowRetryAt(
  o: { limit: number; windowMs: number; now: number; current: number; previous: number },
): number {
  const start = Math.floor(o.now / o.windowMs) * o.windowMs;
  if (o.current < o.limit) {
    if (o.previous === 0) return o.now;
    // floor(x) < k ⇔ x < k for integer k: (1 - p) × previous < limit - current
    const p = 1 - (o.limit - o.current) / o.previous;
    return Math.max(o.now, Math.floor(start + p * o.windowMs) + 1);
  }
  // Wait for the next window, where today's count becomes the weighted previous one.
  return start + o.windowMs + Math.floor((1 - o.limit / o.current) * o.windowMs) + 1;
}

/** A sliding-window counter store. */
export interface WindowStore {
  /** Checks and counts one request; `rate: -1` refunds one. */
  limit(identifier: string, rate?: number): Promise<WindowDecision>;
  /** When this isolate already knows `identifier` is refused: until when (epoch ms). */
  blockedUntil?(identifier: string): number | undefined;
}

/** Redis through `@upstash/ratelimit`, with an exact retry time on refusal. */
export class RedisWindowStore implements WindowStore {
  readonly #ratelimit: Ratelimit;
  /** Per isolate: identifiers known to be exhausted are refused with no round trip. */
  readonly #blocked = new Map<string, number>();

  constructor(
    readonly redis: Redis,
    readonly prefix: string,
    readonly window: RateWindow,
  ) {
    this.#ratelimit = new Ratelimit({
      redis,
      limiter: Ratelimit.slidingWindow(this.window.limit, `${this.window.windowS} s`),
      prefix,
      ephemeralCache: this.#blocked,
      timeout: 0, // we decide on timeouts ourselves, per policy
      analytics: false,
    });
  }

  blockedUntil(identifier: string): number | undefined {
    const until = this.#blocked.get(this.#key(identifier));
    return until !== undefined && until > Date.now() ? until : undefined;
  }

  /** The library's key for `identifier` (its ephemeral cache uses it too). */
  #key(identifier: string): string {
    return `${this.prefix}:${identifier}`;
  }

  /**
   * Counts `n` requests admitted without Redis in window `w` (a window index): a plain INCRBY
   * on the library's bucket, since its script refuses to count past the limit. Windows that no
   * longer weigh in are skipped.
   */
  async add(identifier: string, w: number, n: number): Promise<void> {
    const windowMs = this.window.windowS * 1000;
    if (w < Math.floor(Date.now() / windowMs) - 1) return;
    const key = `${this.#key(identifier)}:${w}`;
    await Promise.all([this.redis.incrby(key, n), this.redis.pexpire(key, windowMs * 2 + 1000)]);
  }

  async limit(identifier: string, rate = 1): Promise<WindowDecision> {
    const res = await this.#ratelimit.limit(identifier, { rate });
    if (res.success) {
      return { success: true, remaining: res.remaining, retryAt: Date.now(), reset: res.reset };
    }
    if (res.reason === "cacheBlock") {
      return { success: false, remaining: 0, retryAt: res.reset, reset: res.reset };
    }
    // Refused by Redis: read both windows' counts (only on this rare path) for the real time.
    const windowMs = this.window.windowS * 1000;
    const now = Date.now();
    const current = Math.floor(now / windowMs);
    const [cur, prev] = await this.redis.mget<(number | null)[]>(
      `${this.#key(identifier)}:${current}`,
      `${this.#key(identifier)}:${current - 1}`,
    );
    const retryAt = slidingWindowRetryAt({
      limit: this.window.limit,
      windowMs,
      now,
      current: Number(cur ?? 0),
      previous: Number(prev ?? 0),
    });
    // The library blocked the key until the window ends; the sliding window frees it sooner.
    this.#blocked.set(this.#key(identifier), retryAt);
    return { success: false, remaining: 0, retryAt, reset: res.reset };
  }
}

/**
 * The same approximation in this process's memory: the store of the embedded default, and the
 * isolate's own limiter when Redis cannot decide in time. One record per identifier (this and
 * the previous window), at most `maxIdentifiers` of them: past that, records of windows that no
 * longer count go first, then the oldest.
 */
export class MemoryWindowStore implements WindowStore {
  readonly #records = new Map<string, { w: number; current: number; previous: number }>();

  constructor(
    readonly window: RateWindow,
    readonly clock: Clock = systemClock,
    readonly maxIdentifiers = 100_000,
  ) {}

  /** This and the previous window's counts for `identifier` at window index `w`. */
  #record(identifier: string, w: number) {
    let r = this.#records.get(identifier);
    if (!r) {
      r = { w, current: 0, previous: 0 };
      if (this.#records.size >= this.maxIdentifiers) this.#sweep(w);
      this.#records.set(identifier, r);
    } else if (r.w !== w) {
      r.previous = r.w === w - 1 ? r.current : 0;
      r.current = 0;
      r.w = w;
    }
    return r;
  }

  /** Identifiers held (at most `maxIdentifiers`). */
  get size(): number {
    return this.#records.size;
  }

  #sweep(w: number): void {
    for (const [id, r] of this.#records) if (r.w < w - 1) this.#records.delete(id);
    for (const id of this.#records.keys()) {
      if (this.#records.size < this.maxIdentifiers) break;
      this.#records.delete(id);
    }
  }

  limit(identifier: string, rate = 1): Promise<WindowDecision> {
    return Promise.resolve(this.decide(identifier, rate));
  }

  /** {@link limit}, synchronously (the isolate's limiter beside a leased block). */
  decide(identifier: string, rate = 1): WindowDecision {
    const now = this.clock();
    const windowMs = this.window.windowS * 1000;
    const w = Math.floor(now / windowMs);
    const r = this.#record(identifier, w);
    const weighted = Math.floor((1 - (now % windowMs) / windowMs) * r.previous);
    const reset = (w + 1) * windowMs;
    if (rate > 0 && weighted + r.current >= this.window.limit) {
      const retryAt = slidingWindowRetryAt({
        limit: this.window.limit,
        windowMs,
        now,
        current: r.current,
        previous: r.previous,
      });
      return { success: false, remaining: 0, retryAt, reset };
    }
    r.current = Math.max(0, r.current + rate);
    const remaining = Math.max(0, this.window.limit - (r.current + weighted));
    return { success: true, remaining, retryAt: now, reset };
  }
}
