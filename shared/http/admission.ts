/**
 * Admission control: how many requests an isolate works on at once, and how many of those one
 * caller may hold.
 *
 * The total is an adaptive concurrency limit after Netflix concurrency-limits' Gradient2 (and
 * Envoy's adaptive concurrency filter): every window of completed requests gives a short-term
 * latency, compared with a long-term average; when requests take longer than the baseline
 * they are queueing (for the CPU, the pool…), and the limit shrinks by that gradient; when
 * they don't, it grows by a small queue allowance. Gradient2's baseline drifts up under
 * sustained overload, so the baseline used here is also capped by an absolute latency target:
 * the limit keeps shrinking while the window's p90 is above it. Time spent waiting on paid
 * upstream APIs is not our capacity and is left out of the samples. Time in the pool's search
 * lane neither holds a slot nor feeds the samples: see {@link outsideAdmission}.
 *
 * Written by hand: the algorithm is ~40 lines and no maintained JavaScript port exists.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import { tryGetContext } from "hono/context-storage";
import { metrics } from "./metrics.ts";
import { ProblemError } from "./problem.ts";

/** Settings of {@link GradientLimit}. */
export interface GradientLimitOptions {
  /** Starting limit. */
  initial: number;
  /** Floor: the limit never drops below it. */
  min: number;
  /** Ceiling. */
  max: number;
  /** The window p90 (ms) above which the limit shrinks whatever the baseline says. */
  targetMs: number;
  /** Shortest window (ms); a window also needs `windowSamples` samples. */
  windowMs?: number;
  /** Fewest samples in a window. */
  windowSamples?: number;
  /** How far each window moves the limit towards its new estimate (0..1). */
  smoothing?: number;
  /** Windows averaged into the long-term baseline. */
  longWindow?: number;
}

/** An adaptive concurrency limit (Gradient2 with a latency ceiling). */
export class GradientLimit {
  #limit: number;
  #longRtt = 0;
  #longCount = 0;
  #window: number[] = [];
  #windowStart = performance.now();
  #windowInFlight = 0;
  #windowDropped = false;
  readonly #o: Required<GradientLimitOptions>;

  constructor(options: GradientLimitOptions) {
    this.#o = {
      windowMs: 100,
      windowSamples: 10,
      smoothing: 0.2,
      longWindow: 600,
      ...options,
    };
    this.#limit = options.initial;
  }

  /** The current limit (whole requests). */
  get limit(): number {
    return Math.floor(this.#limit);
  }

  /** The long-term baseline latency (ms). */
  get baselineMs(): number {
    return this.#longRtt;
  }

  /**
   * Records one completed request: its latency, how many were in flight when it started, and
   * whether it was dropped (it ran out of its budget).
   */
  sample(rttMs: number, inFlight: number, dropped = false): void {
    this.#window.push(rttMs);
    this.#windowInFlight = Math.max(this.#windowInFlight, inFlight);
    this.#windowDropped ||= dropped;
    const now = performance.now();
    if (this.#window.length < this.#o.windowSamples || now - this.#windowStart < this.#o.windowMs) {
      return;
    }
    const samples = this.#window.sort((a, b) => a - b);
    const shortRtt = Math.max(0.1, samples[Math.floor(samples.length * 0.9)]);
    this.#update(shortRtt, this.#windowInFlight, this.#windowDropped);
    this.#window = [];
    this.#windowStart = now;
    this.#windowInFlight = 0;
    this.#windowDropped = false;
  }

  #update(shortRtt: number, inFlight: number, dropped: boolean): void {
    const o = this.#o;
    // Long-term baseline: a plain average while warming up, then an exponential one.
    this.#longCount++;
    const weight = this.#longCount <= 10 ? 1 / this.#longCount : 2 / (o.longWindow + 1);
    this.#longRtt += (shortRtt - this.#longRtt) * weight;
    // Recovered from a long overload: let the baseline come down without waiting for the EMA.
    if (this.#longRtt / shortRtt > 2) this.#longRtt *= 0.9;
    if (dropped) {
      // Requests ran out of their budget: back off multiplicatively, as AIMD does on a drop.
      this.#limit = Math.max(o.min, this.#limit * 0.9);
      return;
    }
    const baseline = Math.min(this.#longRtt, o.targetMs);
    const gradient = Math.max(0.5, Math.min(1, baseline / shortRtt));
    // Don't grow while the application isn't using the limit it has.
    if (gradient === 1 && inFlight < this.#limit / 2) return;
    const queue = Math.max(4, Math.sqrt(this.#limit));
    const estimate = this.#limit * gradient + queue;
    const next = this.#limit * (1 - o.smoothing) + estimate * o.smoothing;
    this.#limit = Math.max(o.min, Math.min(o.max, next));
  }
}

/** Who a request is, for per-caller caps. */
export interface Caller {
  /** `user:<id>` for a signed-in caller, `ip:<address>` for an anonymous one. */
  key: string;
  /** How many of this caller's requests may be in flight at once. */
  cap: number;
}

/**
 * Slots of one isolate, counted in two places. A caller's hold is taken before its body is
 * read and kept until it is answered, so one client can have at most its cap of bodies in
 * flight (a slow upload holds its owner's slot, no one else's). The isolate's work slots (the
 * adaptive total) are taken only once the body is in memory: a slow upload costs the isolate
 * no slot, only the bytes it reserved (see body.ts).
 */
export class Admission {
  #inFlight = 0;
  readonly #byCaller = new Map<string, number>();

  constructor(readonly limiter: GradientLimit) {}

  /** Requests holding a work slot. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Requests of one caller in flight (body being read, or being worked on). */
  held(key: string): number {
    return this.#byCaller.get(key) ?? 0;
  }

  /** Every work slot is taken: refuse before spending anything on the request. */
  get full(): boolean {
    return this.#inFlight >= this.limiter.limit;
  }

  /**
   * How many requests `caller` may have in flight now: its cap, or half the current limit when
   * that is lower (no one caller may take all of a shrunken limit). With the floor at 32 a
   * user's cap of 16 always holds; an anonymous IP's 32 is 16 at the floor.
   */
  capOf(caller: Caller): number {
    return Math.min(caller.cap, Math.max(1, Math.floor(this.limiter.limit / 2)));
  }

  /** Counts a caller's request in (before its body is read); false past its cap. */
  enter(caller: Caller): boolean {
    const held = this.held(caller.key);
    if (held >= this.capOf(caller)) return false;
    this.#byCaller.set(caller.key, held + 1);
    return true;
  }

  /** The caller's request was answered. */
  leave(caller: Caller): void {
    const held = this.held(caller.key) - 1;
    if (held > 0) this.#byCaller.set(caller.key, held);
    else this.#byCaller.delete(caller.key);
  }

  /** Takes a work slot; false when every slot is taken (overload). */
  acquire(): boolean {
    if (this.full) return false;
    this.#inFlight++;
    return true;
  }

  /**
   * Steps a request out of its work slot (it waits in a lane bounded on its own) or back in
   * (whatever the limit: it was admitted, and finishes). No sample is taken.
   */
  step(out: boolean): void {
    this.#inFlight += out ? -1 : 1;
  }

  /** Gives a work slot back and feeds the limit with how long it was held. */
  release(rttMs: number, dropped: boolean): void {
    const inFlight = this.#inFlight;
    this.#inFlight--;
    this.limiter.sample(rttMs, inFlight, dropped);
  }
}

/** A request's hold on its slot, in the context as `admissionSlot`. */
class Slot {
  #out = 0;
  #released = false;

  constructor(readonly admission: Admission) {}

  /** Out of the slot while at least one piece of work is; no-op once the request ended. */
  out(): void {
    if (!this.#released && this.#out++ === 0) this.admission.step(true);
  }

  /** Back in when the last piece of work outside is done. */
  in(): void {
    if (!this.#released && --this.#out === 0) this.admission.step(false);
  }

  /** The request ended: gives the slot back (unless it is out) and samples `rttMs`. */
  release(rttMs: number, dropped: boolean): void {
    if (this.#released) return;
    this.#released = true;
    if (this.#out > 0) this.admission.step(false); // balanced by release
    this.admission.release(rttMs, dropped);
  }
}

/**
 * Runs `work` outside the current request's admission slot, for work in a lane that has
 * bounds of its own (the pool's search lane: a share of the connections, a short wait and
 * statement timeout, a per-user cap). Such work neither holds an isolate slot nor feeds the
 * limit (its time is left out of the samples through `excludedMs`): 40 searches each held
 * for the lane's 100-400 ms would otherwise fill the limit (and push its p90 past the
 * target, shrinking it to its floor), so every reader was shed while the lane alone was
 * busy. The rest of the request (auth, rate limits, answering) still holds its slot.
 */
export async function outsideAdmission<T>(work: () => Promise<T>): Promise<T> {
  const slot = tryGetContext<{ Variables: { admissionSlot?: Slot } }>()?.var.admissionSlot;
  if (!slot) return await work();
  slot.out();
  try {
    return await work();
  } finally {
    slot.in();
  }
}

/** Options of {@link admitCaller}. */
export interface AdmitCallerOptions {
  /** Identifies the caller (verified user, else client IP). */
  identify: (c: Context) => Caller | Promise<Caller>;
}

/** Fast refusals: overload is the isolate's (503), a caller's cap is that client's own (429). */
function overloaded(): ProblemError {
  metrics.inc("requests_shed_total", { reason: "overload" });
  return new ProblemError(503, "unavailable", "the server is at capacity, retry shortly", {
    headers: { "retry-after": "1" },
  });
}

/**
 * Middleware, before the body is read: answers 503 + `Retry-After` at once when every work
 * slot is taken (before even identifying the caller: shedding must stay cheap), and 429 +
 * `Retry-After` (policy `in-flight`) when the caller already has its cap of requests in
 * flight, bodies being received included. The caller's hold lasts until it is answered.
 */
export function admitCaller(admission: Admission, options: AdmitCallerOptions): MiddlewareHandler {
  return async (c, next) => {
    if (admission.full) throw overloaded();
    const caller = await options.identify(c);
    if (!admission.enter(caller)) {
      metrics.inc("requests_shed_total", { reason: "caller" });
      const cap = admission.capOf(caller);
      throw new ProblemError(
        429,
        "rate_limited",
        `rate limit "in-flight" exceeded: at most ${cap} of your requests at once; retry shortly`,
        { headers: { "retry-after": "1" }, extensions: { policy: "in-flight" } },
      );
    }
    try {
      await next();
    } finally {
      admission.leave(caller);
    }
  };
}

/** Options of {@link admit}. */
export interface AdmitOptions {
  /** Milliseconds of the request not spent on our own capacity (waiting on paid APIs). */
  excludedMs?: (c: Context) => number;
}

/**
 * Middleware, once the body is in memory: takes a work slot or answers 503 + `Retry-After`
 * at once (past the adaptive limit), and feeds the limit with how long the slot was held.
 */
export function admit(admission: Admission, options: AdmitOptions = {}): MiddlewareHandler {
  return async (c, next) => {
    if (!admission.acquire()) throw overloaded();
    const slot = new Slot(admission);
    c.set("admissionSlot", slot);
    const start = performance.now();
    let dropped = false;
    try {
      await next();
      dropped = c.res.status === 504;
    } catch (err) {
      dropped = (err as { status?: number })?.status === 504;
      throw err;
    } finally {
      const ms = performance.now() - start - (options.excludedMs?.(c) ?? 0);
      slot.release(Math.max(0, ms), dropped);
    }
  };
}
