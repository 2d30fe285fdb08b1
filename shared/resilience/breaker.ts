/**
 * Circuit breakers for the external APIs (`openai-chat`, `openai-transcribe`, `acrcloud`,
 * `shazam`), with their state in Redis so every isolate sees one breaker per API.
 *
 * State machine (thresholds per breaker; these are the defaults):
 * - **closed**: calls pass. Opens after 5 consecutive failures, or when failures are ≥ 50 % of
 *   the calls in the rolling window once it holds ≥ 10 calls. The window is time-based: 60 s in
 *   6 buckets of 10 s (a bucket older than the window no longer counts), so a burst an hour
 *   ago never trips the breaker and a quiet API needs 10 recent calls before the rate rule
 *   applies.
 * - **open** for 60 s: calls fail fast with {@link CircuitOpenError}, and without a Redis round
 *   trip: each isolate caches "open until" from any answer that says open.
 * - **half-open** (entered lazily by the first `acquire()` after open-until): admits `maxProbes`
 *   probes cluster-wide (default 1). A probe permit expires after `probeTimeoutMs`, so an
 *   isolate that died mid-probe cannot wedge the breaker: the slot is handed out again.
 *   `successesToClose` probe successes (default: all `maxProbes`) close it; any probe failure
 *   reopens it for another 60 s.
 *
 * Every transition bumps `generation`; a permit carries the generation it was issued under and
 * `record()` ignores outcomes from an older one (a slow call that started before the breaker
 * opened says nothing about the API now).
 *
 * Fewer round trips, for callers that ask (recall-resolve; the defaults keep one round trip per
 * acquire and per record):
 * - `trustClosedMs`: an acquire while this isolate heard "closed" (from any acquire, record or
 *   {@link CircuitBreaker.peek} reply) less than that long ago is granted without asking, under
 *   the generation heard. What it can miss is another isolate opening the breaker meanwhile:
 *   this isolate then calls the API at most `trustClosedMs` longer, or until its first record
 *   reply (ignored, as of an older generation, and saying "open", which is cached at once).
 *   Open, half-open and probes always go to the store.
 * - {@link DeferredOutcomes}: an ordinary call's success is held and sent with the caller's
 *   next round trip, in one pipeline. Failures and probe outcomes are recorded at once, so the
 *   breaker opens, closes and reopens exactly when it did; a held success only resets the
 *   consecutive count and fills the window that much later (at most the caller's request).
 *
 * The state lives in {@link RedisBreakerStore} (shared/resilience/breaker_store.ts: one hash per
 * API, each step atomic in one Lua script of shared/resilience/breaker.lua.ts, the one
 * implementation of the machine). Settings, permits and outcome classification:
 * shared/resilience/breaker_settings.ts.
 *
 * Retries and timeouts are not here: another module composes breaker + timeout + retry.
 *
 * @module
 */
import {
  type AcquireResult,
  type BreakerOptions,
  type BreakerSettings,
  type BreakerSnapshot,
  type BreakerState,
  type BreakerStore,
  CircuitOpenError,
  type Classifier,
  defaultClassifier,
  externalApis,
  type Outcome,
  type Permit,
  type RecordResult,
  resolveSettings,
} from "./breaker_settings.ts";
import { type Clock, systemClock } from "./clock.ts";
import type { Sample } from "../http/metrics.ts";

export * from "./breaker_settings.ts";
export { RedisBreakerStore } from "./breaker_store.ts";

/** Counts since the isolate started (for metrics). */
export const breakerStats = {
  /** Keyed `name:from->to`, e.g. `acrcloud:closed->open`; counted by the isolate that caused it. */
  transitions: new Map<string, number>(),
  /** Calls refused, keyed by breaker name. */
  rejected: new Map<string, number>(),
  /** Store calls that failed (Redis down or slow), keyed by breaker name. */
  storeErrors: new Map<string, number>(),
};

function bump(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

// ---------------------------------------------------------------------------------------------
// The breaker
// ---------------------------------------------------------------------------------------------

/** Everything a {@link CircuitBreaker} needs. */
export interface CircuitBreakerInit extends BreakerOptions {
  /** e.g. `openai-chat`; also the store key suffix. */
  name: string;
  store: BreakerStore;
}

/**
 * One breaker. Use {@link Breakers.get} in application code (one shared instance per API, listed
 * for /health); construct directly in tests or to pick the store.
 */
export class CircuitBreaker {
  readonly name: string;
  readonly settings: BreakerSettings;
  readonly store: BreakerStore;
  readonly #clock: Clock;
  readonly #failOpen: boolean;
  /** Open-until as last heard from the store: until then we refuse without asking it. */
  #openUntil = 0;
  /** "Closed" as last heard from the store: under which generation, and when (clock ms). */
  #closed: { generation: number; at: number } | null = null;
  /** A peek in flight (one at a time). */
  #peeking: Promise<void> | null = null;

  constructor(init: CircuitBreakerInit) {
    this.name = init.name;
    this.store = init.store;
    this.settings = resolveSettings(init);
    this.#clock = init.clock ?? systemClock;
    this.#failOpen = init.failOpen ?? true;
  }

  /** Open-until known to this isolate (0 when not known to be open). */
  get cachedOpenUntil(): number {
    return this.#openUntil;
  }

  /**
   * Asks to make one call. Resolves to the permit to pass to {@link record}; rejects with
   * {@link CircuitOpenError} when the circuit is open or half-open with no probe slot free.
   *
   * The store command is issued synchronously (nothing is awaited before it), so the client's
   * auto-pipelining can send it in one HTTP request with commands issued in the same tick.
   * With `trustClosedMs`, a "closed" heard less than that long ago grants without a round trip.
   */
  async acquire(options: { trustClosedMs?: number } = {}): Promise<Permit> {
    const now = this.#clock();
    if (now < this.#openUntil) {
      bump(breakerStats.rejected, this.name);
      throw new CircuitOpenError(this.name, this.#openUntil - now, "open");
    }
    const closed = this.#closed;
    if (closed && now - closed.at < (options.trustClosedMs ?? 0)) {
      return { generation: closed.generation, probe: 0, token: 0, expiresAt: 0, degraded: false };
    }
    let res: AcquireResult;
    try {
      res = await this.store.acquire(this.name, now, this.settings);
    } catch (err) {
      bump(breakerStats.storeErrors, this.name);
      if (!this.#failOpen) throw err;
      console.warn(JSON.stringify({
        msg: "breaker store failed; call let through",
        breaker: this.name,
        error: err instanceof Error ? err.message : String(err),
      }));
      return { generation: -1, probe: 0, token: 0, expiresAt: 0, degraded: true };
    }
    this.#observe(res.state, res.until, res.from, res.generation);
    if (!res.allowed) {
      bump(breakerStats.rejected, this.name);
      throw new CircuitOpenError(
        this.name,
        Math.max(0, res.until - now),
        res.state === "open" ? "open" : "half_open",
      );
    }
    return {
      generation: res.generation,
      probe: res.probe,
      token: res.token,
      expiresAt: res.probe ? res.until : 0,
      degraded: false,
    };
  }

  /**
   * Reports a call's outcome. Never throws: a store failure is counted and logged, since the
   * call's own result matters more than the bookkeeping. Outcomes under an older generation
   * (or an expired probe permit) are ignored by the store. `count` calls of this outcome under
   * this (ordinary) permit are recorded in one step.
   */
  async record(outcome: Outcome, permit: Permit, count = 1): Promise<RecordResult | null> {
    if (permit.degraded) return null;
    try {
      const res = await this.store.record(
        this.name,
        this.#clock(),
        outcome,
        permit,
        this.settings,
        count,
      );
      this.#observe(res.state, res.until, res.from, res.generation);
      return res;
    } catch (err) {
      bump(breakerStats.storeErrors, this.name);
      console.warn(JSON.stringify({
        msg: "breaker outcome not recorded",
        breaker: this.name,
        error: err instanceof Error ? err.message : String(err),
      }));
      return null;
    }
  }

  /**
   * Refreshes what this isolate knows of the state, changing nothing in the store, unless it
   * knows enough already (open, or closed heard less than `trustClosedMs` ago). Issued in the
   * caller's tick, so it shares an HTTP request with the caller's other commands: a later
   * {@link acquire} with the same `trustClosedMs` then needs no round trip of its own. Never
   * throws (a failed peek just leaves the next acquire to ask).
   */
  peek(trustClosedMs: number): Promise<void> {
    const now = this.#clock();
    const closed = this.#closed;
    if (!this.store.peek || now < this.#openUntil) return Promise.resolve();
    if (closed && now - closed.at < trustClosedMs) return Promise.resolve();
    return this.#peeking ??= this.store.peek(this.name).then(
      (r) => this.#observe(r.state, r.until, null, r.generation),
      () => bump(breakerStats.storeErrors, this.name),
    ).finally(() => this.#peeking = null);
  }

  /**
   * acquire → `fn` → record → the result; `fn`'s error is rethrown as is, a refusal throws
   * {@link CircuitOpenError} without calling `fn`. A probe's `fn` gets a signal that aborts
   * when its permit expires (past that, another probe holds the slot); ordinary calls get none.
   * `trustClosedMs` is the acquire's; with `deferred`, an ordinary call's success is held there
   * instead of recorded now (failures and probe outcomes are recorded at once).
   */
  async run<T>(
    fn: (signal?: AbortSignal) => Promise<T>,
    classify: Classifier = defaultClassifier,
    options: { trustClosedMs?: number; deferred?: DeferredOutcomes } = {},
  ): Promise<T> {
    const permit = await this.acquire(options);
    let timer: ReturnType<typeof setTimeout> | undefined;
    let signal: AbortSignal | undefined;
    if (permit.probe) {
      const ctl = new AbortController();
      timer = setTimeout(
        () => ctl.abort(new DOMException("probe permit expired", "TimeoutError")),
        this.settings.probeTimeoutMs,
      );
      signal = ctl.signal;
    }
    let value: T;
    try {
      value = await fn(signal);
    } catch (err) {
      clearTimeout(timer);
      await this.record(classify(err, true), permit);
      throw err;
    }
    clearTimeout(timer);
    const outcome = classify(value, false);
    if (outcome === "success" && !permit.probe && !permit.degraded && options.deferred) {
      options.deferred.hold(this, permit);
    } else {
      await this.record(outcome, permit);
    }
    return value;
  }

  /** The breaker's state as stored (one read; for /health). */
  state(): Promise<BreakerSnapshot> {
    return this.store.read(this.name, this.#clock(), this.settings);
  }

  /** Caches open-until or closed, and logs and counts a transition this call caused. */
  #observe(state: BreakerState, until: number, from: BreakerState | null, generation: number) {
    this.#openUntil = state === "open" ? until : 0;
    this.#closed = state === "closed" ? { generation, at: this.#clock() } : null;
    if (from && from !== state) {
      bump(breakerStats.transitions, `${this.name}:${from}->${state}`);
      console.log(JSON.stringify({
        msg: "breaker transition",
        breaker: this.name,
        from,
        to: state,
        generation,
      }));
    }
  }
}

/**
 * Successes of ordinary calls held to be recorded later, all at once: {@link flush} issues
 * their records in one tick, so they share an HTTP request with whatever the caller issues
 * beside them (recall-resolve: its finish), and the successes of one breaker under one
 * generation are one record step. One per piece of work; flush it on every path.
 */
export class DeferredOutcomes {
  #held: { breaker: CircuitBreaker; permit: Permit; count: number }[] = [];

  /** Holds one success of `breaker` under `permit` (an ordinary one: no probe). */
  hold(breaker: CircuitBreaker, permit: Permit): void {
    const same = this.#held.find((h) =>
      h.breaker === breaker && h.permit.generation === permit.generation
    );
    if (same) same.count++;
    else this.#held.push({ breaker, permit, count: 1 });
  }

  /** Successes held now. */
  get size(): number {
    return this.#held.reduce((n, h) => n + h.count, 0);
  }

  /** Records every held success now (issued synchronously) and waits for them; never rejects. */
  async flush(): Promise<void> {
    const held = this.#held;
    this.#held = [];
    await Promise.all(
      held.map(({ breaker, permit, count }) => breaker.record("success", permit, count)),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------------------------

/**
 * The isolate's breakers, one per name, all in one store (Redis): created on first use with
 * the options of that first call; later calls return the same instance. /health lists them.
 */
export class Breakers {
  readonly #registry = new Map<string, CircuitBreaker>();

  constructor(readonly store: BreakerStore, readonly clock?: Clock) {}

  /** The breaker for `name` (created on first use with `options`). */
  get(name: string, options: BreakerOptions = {}): CircuitBreaker {
    let b = this.#registry.get(name);
    if (!b) {
      b = new CircuitBreaker({ clock: this.clock, ...options, name, store: this.store });
      this.#registry.set(name, b);
    }
    return b;
  }

  /** Every breaker made so far, in creation order. */
  list(): CircuitBreaker[] {
    return [...this.#registry.values()];
  }

  /**
   * Snapshots for /health of the known external APIs plus any other breaker. A breaker whose
   * store can't be read is reported with `error` instead of failing the whole answer.
   */
  health(): Promise<(BreakerSnapshot | { name: string; error: string })[]> {
    for (const api of externalApis) this.get(api);
    return Promise.all(
      this.list().map((b) =>
        b.state().catch((err) => ({
          name: b.name,
          error: err instanceof Error ? err.message : String(err),
        }))
      ),
    );
  }

  /** Metric samples: transitions, rejections and store errors of this isolate, open circuits. */
  samples(): Sample[] {
    return [
      ...[...breakerStats.transitions].map(([key, value]) => {
        const [name, change] = key.split(":");
        const [from, to] = change.split("->");
        return {
          name: "breaker_transitions_total",
          labels: { breaker: name, from, to },
          value,
          type: "counter" as const,
        };
      }),
      ...[...breakerStats.rejected].map(([name, value]) => ({
        name: "breaker_rejections_total",
        labels: { breaker: name },
        value,
        type: "counter" as const,
      })),
      ...[...breakerStats.storeErrors].map(([name, value]) => ({
        name: "breaker_store_errors_total",
        labels: { breaker: name },
        value,
        type: "counter" as const,
      })),
      ...this.list().map((b) => ({
        name: "breaker_open",
        labels: { breaker: b.name },
        value: b.cachedOpenUntil > Date.now() ? 1 : 0,
        help: "1 while this isolate knows the circuit is open",
      })),
    ];
  }
}
