/**
 * Leased rate limits: an isolate takes a block of an identifier's tokens from Redis in one
 * script call (shared/resilience/ratelimit_lease.lua.ts) and spends them locally, so a warm
 * request usually costs no Redis command at all. The middleware, the degraded mode and the
 * policies are in ratelimit.ts; this module holds the blocks.
 *
 * Never more than the limit: a leased token is counted in Redis (in the sliding-window bucket
 * of the moment it was leased) before the isolate spends it, and a block is spent only while
 * that bucket is still the current one, so Redis always counts at least what was admitted.
 * Tokens leased but never spent count as used for the rest of their window (and, weighted, in
 * the next) for every other isolate; the isolate that holds them subtracts them from its own
 * view of the counts, so one user on one isolate gets exactly what a check per request gives.
 *
 * Block sizes adapt: the first lease of an identifier asks for 1 token; a block spent to the
 * end asks for twice as many next time; a block that ends with its window unspent asks for
 * what the isolate spent in that window (a steady caller then needs about one lease a window);
 * concurrent waiters ask for at least one each. Every lease is capped at an eighth of the
 * tightest window's limit ({@link maxBlock}) and by what the windows have left.
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import type { Clock } from "./clock.ts";
import { leaseTokensScript } from "./ratelimit_lease.lua.ts";
import { type RateWindow, slidingWindowRetryAt, type WindowDecision } from "./ratelimit_store.ts";
import { runScript } from "../data/redis_script.ts";

/** A lease caps at this share of the tightest limit: the cross-isolate approximation's bound. */
export const blockShare = 8;

/** The largest block of a policy's windows: `floor(min limit / 8)`, at least 1. */
export function maxBlock(windows: RateWindow[]): number {
  return Math.max(1, Math.floor(Math.min(...windows.map((w) => w.limit)) / blockShare));
}

/** A lease in flight for one identifier; every request that needs tokens meanwhile waits on it. */
export interface PendingLease {
  /** Resolves once the answer is applied to the block; rejects when Redis failed. */
  readonly done: Promise<void>;
  readonly settled: boolean;
}

interface Lease extends PendingLease {
  settled: boolean;
  /** Bucket index per window the grant is counted in. */
  readonly buckets: number[];
  /** Per window, the spare tokens sent: `[current bucket, previous bucket]`. */
  readonly spare: [number, number][];
  /** Admissions the isolate made alone while this lease was in flight, by bucket per window. */
  readonly debts: number[][];
}

/** Unspent tokens of ended blocks in one window: bucket index → count (two buckets at most). */
type Spare = Map<number, number>;

/** What the isolate knows of one identifier. */
interface State {
  /** Bucket per window of the block (its tokens were counted there). */
  buckets: number[];
  /** Tokens of the block left to spend. */
  left: number;
  /** What the last lease granted. */
  granted: number;
  /** Tokens the windows had left, unleased, after the last grant (RateLimit headers). */
  unleased: number[];
  /** How many tokens the next lease asks for. */
  next: number;
  /** Tokens spent in the first window's bucket `spentIn` (the next window's first ask). */
  spent: number;
  spentIn: number;
  /** Per window: unspent tokens of ended blocks, this isolate's own over-count in Redis. */
  spare: Spare[];
  /** Refused by Redis: until when, and per window why. */
  refused: { until: number; windows: WindowDecision[] } | null;
  lease: Lease | null;
  /** Requests waiting on `lease` (or about to look at its grant). */
  waiting: number;
}

/** Options of {@link TokenLeases}. */
export interface TokenLeasesOptions {
  redis: Redis;
  /** Per window, the key prefix of its buckets (`<prefix>:<identifier>:<bucket index>`). */
  prefixes: string[];
  windows: RateWindow[];
  clock: Clock;
  /** At most this many identifiers held (default 100,000): idle, stale ones go first. */
  maxIdentifiers?: number;
  /**
   * `n` admissions per window bucket (`buckets`, one per window) the isolate made alone that a
   * late grant could not cover: Redis must still count them (`redisDown`: the lease failed).
   */
  unpaid(identifier: string, buckets: number[], n: number, redisDown: boolean): void;
  /** A lease went out (`outcome` when answered): metrics. */
  observe?(outcome: "granted" | "refused" | "failed", tokens: number): void;
}

/** The blocks of one policy's identifiers in this isolate. */
export class TokenLeases {
  readonly #states = new Map<string, State>();
  readonly #o: TokenLeasesOptions;
  readonly #windowsMs: number[];
  readonly #max: number;

  constructor(options: TokenLeasesOptions) {
    this.#o = options;
    this.#windowsMs = options.windows.map((w) => w.windowS * 1000);
    this.#max = maxBlock(options.windows);
  }

  /** Identifiers held (tests). */
  get size(): number {
    return this.#states.size;
  }

  /** Tokens leased and not yet spent by this isolate for `identifier` (tests, headers). */
  left(identifier: string): number {
    return this.#states.get(identifier)?.left ?? 0;
  }

  #bucketsAt(now: number): number[] {
    return this.#windowsMs.map((ms) => Math.floor(now / ms));
  }

  #state(identifier: string): State {
    let s = this.#states.get(identifier);
    if (!s) {
      if (this.#states.size >= (this.#o.maxIdentifiers ?? 100_000)) this.#sweep();
      s = {
        buckets: [],
        left: 0,
        granted: 0,
        unleased: [],
        next: 1,
        spent: 0,
        spentIn: 0,
        spare: this.#windowsMs.map(() => new Map()),
        refused: null,
        lease: null,
        waiting: 0,
      };
      this.#states.set(identifier, s);
    }
    return s;
  }

  /**
   * Frees room: identifiers with nothing in flight go, stale ones first (their blocks and spare
   * tokens no longer weigh in), then the oldest. Forgetting is safe: tokens stay counted in
   * Redis, so an identifier forgotten early is only limited more tightly.
   */
  #sweep(): void {
    const now = this.#o.clock();
    const current = this.#bucketsAt(now);
    const idle = (s: State) => !s.lease && s.waiting === 0;
    const stale = (s: State) =>
      idle(s) && !(s.refused && s.refused.until > now) &&
      s.spare.every((m, i) => [...m.keys()].every((b) => b < current[i] - 1)) &&
      (s.left === 0 || s.buckets.some((b, i) => b !== current[i]));
    for (const [id, s] of this.#states) if (stale(s)) this.#states.delete(id);
    const max = this.#o.maxIdentifiers ?? 100_000;
    for (const [id, s] of this.#states) {
      if (this.#states.size < max) break;
      if (idle(s)) this.#states.delete(id);
    }
  }

  /** When Redis refused `identifier` and it can't pass yet: each window's decision. */
  refused(identifier: string, now: number): WindowDecision[] | null {
    const s = this.#states.get(identifier);
    if (!s?.refused) return null;
    if (s.refused.until > now) return s.refused.windows;
    s.refused = null;
    return null;
  }

  /**
   * Takes one token of `identifier`'s block, if it holds one for the current buckets. Returns
   * each window's view for the headers: `remaining` is what the block holds plus what Redis had
   * left unleased at the last grant (older than now, so at most what a check would say).
   */
  take(identifier: string, now: number): WindowDecision[] | null {
    const s = this.#states.get(identifier);
    if (!s || s.left === 0) return null;
    const current = this.#bucketsAt(now);
    if (s.buckets.some((b, i) => b !== current[i])) {
      this.#retire(s);
      return null;
    }
    s.left--;
    if (s.spentIn !== current[0]) {
      s.spentIn = current[0];
      s.spent = 0;
    }
    s.spent++;
    if (s.left === 0) s.next = Math.min(this.#max, 2 * s.granted); // spent to the end: grow
    return this.#windowsMs.map((ms, i) => ({
      success: true,
      remaining: s.left + s.unleased[i],
      retryAt: now,
      reset: (current[i] + 1) * ms,
    }));
  }

  /** Puts back a token {@link take} handed out (the isolate's own limiter refused it). */
  giveBack(identifier: string): void {
    const s = this.#states.get(identifier);
    if (s) s.left++;
  }

  /** The block's window ended: its unspent tokens become this isolate's spare over-count. */
  #retire(s: State): void {
    if (s.left > 0) {
      s.buckets.forEach((b, i) => {
        const spare = s.spare[i];
        spare.set(b, (spare.get(b) ?? 0) + s.left);
        for (const k of spare.keys()) if (k < b - 1) spare.delete(k);
      });
      // Ended unspent: ask for what the window took (its spending, if it was this window's).
      const spent = s.spentIn === s.buckets[0] ? s.spent : s.granted - s.left;
      s.next = Math.max(1, Math.min(this.#max, spent));
    }
    s.left = 0;
  }

  /**
   * The lease in flight for `identifier`, sending one if none is. The caller waits on it with
   * {@link wait}.
   */
  acquire(identifier: string, now: number): { lease: PendingLease; sent: boolean } {
    const s = this.#state(identifier);
    if (s.lease) return { lease: s.lease, sent: false };
    const current = this.#bucketsAt(now);
    const want = Math.max(1, Math.min(this.#max, Math.max(s.next, s.waiting + 1)));
    const keys: string[] = [];
    const args: number[] = [now, want];
    const spare = s.spare.map((m, i): [number, number] => [
      m.get(current[i]) ?? 0,
      m.get(current[i] - 1) ?? 0,
    ]);
    this.#o.windows.forEach((w, i) => {
      const key = `${this.#o.prefixes[i]}:${identifier}:`;
      keys.push(key + current[i], key + (current[i] - 1));
      args.push(w.limit, this.#windowsMs[i], ...spare[i]);
    });
    const lease: Lease = {
      settled: false,
      buckets: current,
      spare,
      debts: [],
      done: runScript(this.#o.redis, leaseTokensScript, keys, args).then(
        (reply) => this.#granted(identifier, s, lease, now, reply),
        (err) => {
          this.#failed(identifier, s, lease);
          throw err;
        },
      ),
    };
    lease.done.catch(() => {}); // waiters handle the failure; nobody may be left to
    s.lease = lease;
    return { lease, sent: true };
  }

  /**
   * Waits for `lease` or `deadline`, whichever first: `ok` (look at the block again),
   * `failed` (Redis failed) or `late`.
   */
  async wait(
    identifier: string,
    lease: PendingLease,
    deadline: Promise<void>,
  ): Promise<"ok" | "failed" | "late"> {
    const s = this.#state(identifier);
    s.waiting++;
    try {
      return await Promise.race([
        lease.done.then(() => "ok" as const, () => "failed" as const),
        deadline.then(() => "late" as const),
      ]);
    } finally {
      s.waiting--;
    }
  }

  /**
   * Records an admission the isolate made alone while `lease` was still in flight, in
   * `buckets`: its grant pays for it (the token is counted in Redis already), or Redis is told
   * through `unpaid`. False when the lease has already settled (the caller tells Redis).
   */
  owe(lease: PendingLease, buckets: number[]): boolean {
    if (lease.settled) return false;
    (lease as Lease).debts.push(buckets);
    return true;
  }

  /** Applies a lease's answer: the grant (debts paid first) or a refusal with its retry time. */
  #granted(identifier: string, s: State, lease: Lease, now: number, reply: number[]): void {
    lease.settled = true;
    if (s.lease === lease) s.lease = null;
    let granted = Number(reply[0]);
    this.#o.observe?.(granted > 0 ? "granted" : "refused", granted);
    // Debts in the lease's buckets are paid from the grant; the rest Redis must count.
    const unpaid = new Map<string, { buckets: number[]; n: number }>();
    let paid = 0;
    for (const buckets of lease.debts) {
      if (paid < granted && buckets.every((b, i) => b === lease.buckets[i])) {
        paid++;
        continue;
      }
      const key = buckets.join(",");
      const u = unpaid.get(key) ?? { buckets, n: 0 };
      u.n++;
      unpaid.set(key, u);
    }
    for (const u of unpaid.values()) this.#o.unpaid(identifier, u.buckets, u.n, false);
    // Each window's count as this isolate sees it, its own spare tokens taken off: what the
    // script computed (the same arithmetic, on the same numbers).
    const own = this.#o.windows.map((w, i) => {
      const ms = this.#windowsMs[i];
      const current = Math.max(0, Number(reply[2 * i + 1]) - lease.spare[i][0]);
      const previous = Math.max(0, Number(reply[2 * i + 2]) - lease.spare[i][1]);
      const weighted = Math.floor((1 - (now % ms) / ms) * previous);
      return { ms, current, previous, left: w.limit - weighted - current };
    });
    if (granted > 0) {
      if (s.left > 0 && s.buckets.some((b, i) => b !== lease.buckets[i])) this.#retire(s);
      s.buckets = lease.buckets;
      s.granted = granted;
      granted -= paid;
      s.left += granted;
      s.unleased = own.map((o) => Math.max(0, o.left));
      if (s.left === 0) s.next = Math.min(this.#max, 2 * s.granted);
      return;
    }
    // Refused: until the sliding window lets one through, counts as they stand now.
    const windows = own.map((o, i) => {
      const reset = (lease.buckets[i] + 1) * o.ms;
      if (o.left >= 1) return { success: true, remaining: o.left, retryAt: now, reset };
      const retryAt = slidingWindowRetryAt({
        limit: this.#o.windows[i].limit,
        windowMs: o.ms,
        now,
        current: o.current,
        previous: o.previous,
      });
      return { success: false, remaining: 0, retryAt, reset };
    });
    if (windows.every((w) => w.success)) { // can't be (the script's own arithmetic), yet:
      for (const w of windows) Object.assign(w, { success: false, remaining: 0, retryAt: now + 1 });
    }
    // Redis refused, so this refuses: at least for this millisecond (the requests that waited
    // on this lease don't send another).
    s.refused = { until: Math.max(now + 1, ...windows.map((w) => w.retryAt)), windows };
  }

  /** Redis failed: what the isolate admitted meanwhile is owed to Redis once it is back. */
  #failed(identifier: string, s: State, lease: Lease): void {
    lease.settled = true;
    if (s.lease === lease) s.lease = null;
    this.#o.observe?.("failed", 0);
    for (const buckets of lease.debts) this.#o.unpaid(identifier, buckets, 1, true);
  }
}
