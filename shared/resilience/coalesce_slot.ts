/**
 * Shared results: identical requests get one answer, kept for a while for later callers and
 * computed once across isolates by a leader that holds one of its own caller's concurrency
 * slots (recall-resolve: the providers' answer to one question, 5 resolves in flight per user).
 *
 * The same protocol as the pieces it is made of (a stored value, the coalescer of
 * coalesce.ts, a lease of lease.ts), in two round trips instead of six one after the other:
 * - begin (one script, coalesce_slot.lua.ts): the stored value if there is one; else the
 *   leader's result or lock to follow; else the caller's slot and then the lock, taken
 *   together, or neither when the caller's slots are all taken (429);
 * - finish (one script): the value stored (when worth keeping), the envelope published for the
 *   followers, lock and slot released. What the leader's work wants sent at its end (breaker
 *   outcomes: {@link LeaderContext.alongFinish}) goes out in the same tick, so the client's
 *   auto-pipelining puts it in the finish's HTTP request.
 *
 * Decisions as in the pieces: the slot is the caller's, taken only by whoever computes (a
 * follower holds none); the slot store not answering within `decisionMs` is a 503 (or, for a
 * fail-open slot, work without one); a lead won too late is handed back at once; a follower
 * that waited `waitMs` computes alone, under a slot of its own. Stored values are never
 * invalidated (`keep` says which values are worth keeping; the others are only shared with
 * the callers waiting), so this isolate keeps the ones it sees too, until they expire.
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import { type Clock, systemClock } from "./clock.ts";
import { type Begin, beginScript, finishScript } from "./coalesce_slot.lua.ts";
import {
  type CoalesceStats,
  coalesceStats,
  failureEnvelope,
  followerPolls,
  settleEnvelope,
  SingleFlight,
} from "./coalesce.ts";
import {
  leaseStats,
  RedisLeaseStore,
  type SlotPolicy,
  slotsTaken,
  undecided,
  withSlot,
} from "./lease.ts";
import { ProblemError } from "../http/problem.ts";
import { runScript } from "../data/redis_script.ts";
import { untilAborted, withinMs } from "./abort.ts";

/** What the leader's work may ask of the finish. */
export interface LeaderContext {
  /**
   * Calls `send` right before the finish script, in its tick, so the commands `send` issues
   * synchronously share its HTTP request; the finish waits for them too (a failure is only
   * `send`'s to report).
   */
  alongFinish(send: () => Promise<unknown>): void;
}

/** One shared computation. */
export interface SharedOptions<T> {
  /** Where the value is kept for later callers: key, time to live, which values (default all). */
  store?: { key: string; ttlMs: number; keep?: (value: T) => boolean };
  /** The caller's concurrency slots (`key`: whose, e.g. the user id), taken to compute. */
  slot: SlotPolicy & { key: string };
  /** How long the leader's lock lives (≥ the work's usual duration). */
  lockTtlMs: number;
  /** How long a follower waits for the leader before computing alone. */
  waitMs: number;
  /** How long a published result stays readable for waiters. Default 10 000. */
  resultTtlMs?: number;
  /** How long a leader's failure stays readable for waiters. Default 2000. */
  failureTtlMs?: number;
  /** Stops this caller's wait (the shared work goes on for the others). */
  signal?: AbortSignal;
  /**
   * Called right before the first begin script is issued, in its tick, when Redis is asked at
   * all (not for a value this isolate kept): what it issues synchronously shares the begin's
   * HTTP request (recall-resolve: the breakers' peek).
   */
  alongBegin?: () => void;
}

/** A shared computation's value, and whether this caller computed it. */
export interface Shared<T> {
  value: T;
  computed: boolean;
}

/** Construction options of {@link SharedResults}. */
export interface SharedResultsOptions {
  /** Prefix of the locks and results (end it with `:`). */
  prefix: string;
  /** Prefix of the slot sets, as the isolate's lease store has it (`…lease:`). */
  slotPrefix: string;
  clock?: Clock;
  /** Values this isolate keeps (the oldest go first). Default 1000. */
  maxLocal?: number;
  /** Where to count (default: the isolate's coalescer counters). */
  stats?: CoalesceStats;
  /** The followers' wait between polls (tests hook it). */
  sleep?: (ms: number) => Promise<void>;
}

/** A stored value as Redis holds it: the value and when it expires (for this isolate's copy). */
interface StoredValue {
  v: unknown;
  e: number;
}

/** A shared caller refused because another caller's slots were taken tries this often. */
const maxAttempts = 3;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const parse = (raw: unknown) => typeof raw === "string" ? JSON.parse(raw) : raw;

/** Runs `compute` on its own, then what it asked to send at its end. */
async function unslotted<T>(compute: (leader: LeaderContext) => Promise<T>): Promise<T> {
  const along: (() => Promise<unknown>)[] = [];
  try {
    return await compute({ alongFinish: (send) => void along.push(send) });
  } finally {
    await Promise.all(along.map((send) => send().catch(() => {})));
  }
}

/** Results shared by identical requests, in one Redis (see the module). */
export class SharedResults {
  readonly stats: CoalesceStats;
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #slotPrefix: string;
  readonly #slots: RedisLeaseStore;
  readonly #clock: Clock;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #maxLocal: number;
  readonly #local = new Map<string, StoredValue>();
  readonly #flights = new SingleFlight();
  readonly #pending = new Set<Promise<unknown>>();

  constructor(redis: Redis, options: SharedResultsOptions) {
    this.#redis = redis;
    this.#prefix = options.prefix;
    this.#slotPrefix = options.slotPrefix;
    this.#clock = options.clock ?? systemClock;
    this.#slots = new RedisLeaseStore(redis, options.slotPrefix, this.#clock);
    this.#sleep = options.sleep ?? sleep;
    this.#maxLocal = options.maxLocal ?? 1000;
    this.stats = options.stats ?? coalesceStats;
  }

  /**
   * `compute`'s value for `key`: kept (this isolate, then Redis), else from whoever computes it
   * now, else computed here under one of `options.slot.key`'s slots. Throws the slot's 429/503,
   * or the leader's failure.
   */
  async run<T>(
    key: string,
    compute: (leader: LeaderContext) => Promise<T>,
    options: SharedOptions<T>,
  ): Promise<Shared<T>> {
    for (let attempt = 1;; attempt++) {
      const kept = options.store && this.#localGet(options.store.key);
      if (kept) return { value: kept.v as T, computed: false };
      let mine = false;
      const { promise, shared } = this.#flights.run(key, () => {
        mine = true;
        return this.#coordinate(key, compute, options);
      });
      if (shared) this.stats.localShares++;
      try {
        const result = await untilAborted(promise, options.signal);
        return { value: result.value, computed: mine && result.computed };
      } catch (err) {
        // Another caller in this isolate led and was refused its own slot: ours may be free.
        const othersRefusal = !mine && err instanceof ProblemError && err.status === 429 &&
          err.options.extensions?.policy === options.slot.name;
        if (!othersRefusal || attempt >= maxAttempts) throw err;
      }
    }
  }

  /** Resolves once every Redis call started so far has settled (shutdown, tests). */
  async idle(): Promise<void> {
    while (this.#pending.size) await Promise.allSettled([...this.#pending]);
  }

  async #coordinate<T>(
    key: string,
    compute: (leader: LeaderContext) => Promise<T>,
    o: SharedOptions<T>,
  ): Promise<Shared<T>> {
    const lockKey = `${this.#prefix}${key}:lock`;
    const resultKey = (token: string) => `${this.#prefix}${key}:result:${token}`;
    const slotKey = `${this.#slotPrefix}${o.slot.name}:${o.slot.key}`;
    const token = crypto.randomUUID();
    const slotId = crypto.randomUUID();
    const nextPoll = followerPolls(o.waitMs, this.#sleep, this.stats);
    let watched: string | null = null;
    for (;;) {
      const keys = [lockKey, slotKey];
      const storedAt = o.store ? keys.push(o.store.key) : 0;
      const watchedAt = watched ? keys.push(resultKey(watched)) : 0;
      const now = Math.floor(this.#clock());
      const args = [token, Math.ceil(o.lockTtlMs), now, o.slot.ttlMs, o.slot.limit, slotId];
      if (!watched) o.alongBegin?.();
      const begin = await this.#begin(keys, [...args, storedAt, watchedAt], o.slot.decisionMs);
      if (!begin) break;
      switch (begin[0]) {
        case "stored": {
          const stored = parse(begin[1]) as StoredValue;
          this.#localSet(o.store!.key, stored);
          return { value: stored.v as T, computed: false };
        }
        case "done":
          this.stats.followers++;
          return { value: settleEnvelope<T>(begin[1]), computed: false };
        case "full":
          throw slotsTaken(o.slot, Number(begin[1]));
        case "lead":
          if (watched) this.stats.takeovers++;
          this.stats.leader++;
          leaseStats.granted++;
          return await this.#lead(lockKey, resultKey(token), token, slotKey, slotId, compute, o);
      }
      // Follow whoever holds the lock now: after an expiry that may be a new leader.
      watched = begin[1];
      if (!(await nextPoll())) break;
    }
    this.stats.fallbacks++;
    if (watched === null) {
      // Redis could not decide even the first step: fail open (no slot) or closed (503).
      undecided(o.slot);
      return { value: await unslotted(compute), computed: true };
    }
    // The leader is slow or gone and Redis can't tell: compute alone, under a slot of our own.
    return { value: await this.#alone(compute, o), computed: true };
  }

  /** One begin round trip; null when Redis fails or is slower than `decisionMs`. */
  async #begin(
    keys: string[],
    args: (string | number)[],
    decisionMs: number,
  ): Promise<Begin | null> {
    const attempt = this.#track(runScript(this.#redis, beginScript, keys, args)).catch((err) => {
      console.warn(JSON.stringify({ msg: "shared result begin failed", error: String(err) }));
      return null;
    });
    return await withinMs(attempt, decisionMs, (late) => {
      if (late?.[0] !== "lead") return;
      // A lock and slot won after we gave up would make the others wait for nothing.
      leaseStats.lateReleased++;
      this.#finish(keys[0], String(args[0]), keys[1], String(args[5])).catch(() => {});
    });
  }

  async #lead<T>(
    lockKey: string,
    resultKey: string,
    token: string,
    slotKey: string,
    slotId: string,
    compute: (leader: LeaderContext) => Promise<T>,
    o: SharedOptions<T>,
  ): Promise<Shared<T>> {
    const along: (() => Promise<unknown>)[] = [];
    const leader: LeaderContext = { alongFinish: (send) => void along.push(send) };
    let value: T;
    try {
      // The slot expires by itself after ttlMs: past that, stop waiting (as withSlot does).
      value = await untilAborted(compute(leader), AbortSignal.timeout(o.slot.ttlMs));
    } catch (err) {
      const envelope = JSON.stringify(failureEnvelope(err));
      await this.#finish(lockKey, token, slotKey, slotId, along, {
        key: resultKey,
        envelope,
        ttlMs: o.failureTtlMs ?? 2000,
      });
      throw err;
    }
    let envelope: string | undefined;
    try {
      envelope = JSON.stringify({ ok: true, v: value });
    } catch {
      // Not JSON-serializable: nothing published or kept; waiters see the lock go and take over.
    }
    let store: { key: string; value: string; ttlMs: number } | undefined;
    if (envelope !== undefined && o.store && (o.store.keep?.(value) ?? true)) {
      const stored: StoredValue = { v: value, e: this.#clock() + o.store.ttlMs };
      this.#localSet(o.store.key, stored);
      store = { key: o.store.key, value: JSON.stringify(stored), ttlMs: o.store.ttlMs };
    }
    // A stored value is what the followers' next begin finds first: no envelope needed then.
    await this.#finish(
      lockKey,
      token,
      slotKey,
      slotId,
      along,
      envelope === undefined || store
        ? undefined
        : { key: resultKey, envelope, ttlMs: o.resultTtlMs ?? 10_000 },
      store,
    );
    return { value, computed: true };
  }

  /**
   * Stores, publishes and releases lock and slot in one round trip, with what the leader asked
   * to send alongside in the same tick. Never rejects: a lock or slot not released expires.
   */
  async #finish(
    lockKey: string,
    token: string,
    slotKey: string,
    slotId: string,
    along: (() => Promise<unknown>)[] = [],
    publish?: { key: string; envelope: string; ttlMs: number },
    store?: { key: string; value: string; ttlMs: number },
  ): Promise<void> {
    const keys = [lockKey, slotKey];
    const resultAt = publish ? keys.push(publish.key) : 0;
    const storedAt = store ? keys.push(store.key) : 0;
    const args = [
      token,
      slotId,
      resultAt,
      publish?.envelope ?? "",
      publish?.ttlMs ?? 0,
      storedAt,
      store?.value ?? "",
      store?.ttlMs ?? 0,
    ];
    const sent = along.map((send) => send().catch(() => {}));
    const finished = this.#track(runScript(this.#redis, finishScript, keys, args)).catch((err) => {
      console.warn(JSON.stringify({ msg: "shared result finish failed", error: String(err) }));
    });
    await Promise.all([finished, ...sent]);
  }

  /** A follower that gave up on the leader: computes under a slot of its own (lease.ts). */
  #alone<T>(compute: (leader: LeaderContext) => Promise<T>, o: SharedOptions<T>): Promise<T> {
    return withSlot(this.#slots, o.slot, o.slot.key, undefined, () => unslotted(compute));
  }

  #localGet(key: string): StoredValue | undefined {
    const entry = this.#local.get(key);
    if (!entry) return undefined;
    this.#local.delete(key);
    if (entry.e <= this.#clock()) return undefined;
    this.#local.set(key, entry); // re-insert: Map order is the LRU order
    return entry;
  }

  #localSet(key: string, stored: StoredValue): void {
    if (this.#maxLocal <= 0 || stored.e <= this.#clock()) return;
    this.#local.delete(key);
    this.#local.set(key, stored);
    while (this.#local.size > this.#maxLocal) this.#local.delete(this.#local.keys().next().value!);
  }

  #track<T>(work: Promise<T>): Promise<T> {
    this.#pending.add(work);
    work.finally(() => this.#pending.delete(work)).catch(() => {});
    return work;
  }
}
