/**
 * The circuit breaker's vocabulary: the APIs guarded, states, settings and their defaults,
 * permits, what a store answers, and how a call's outcome is classified. The state machine is
 * described in shared/resilience/breaker.ts; its steps run in Redis (shared/resilience/breaker.lua.ts).
 *
 * @module
 */
import type { Clock } from "./clock.ts";

/** The external APIs we guard, one breaker each. */
export const externalApis = ["openai-chat", "openai-transcribe", "acrcloud", "shazam"] as const;

/** One of {@link externalApis}. */
export type ExternalApi = typeof externalApis[number];

/** Where a breaker stands. */
export type BreakerState = "closed" | "open" | "half_open";

/** What a guarded call's outcome means for the breaker. */
export type Outcome = "success" | "failure";

/** Thresholds of one breaker (all have defaults, see {@link defaultSettings}). */
export interface BreakerSettings {
  /** Consecutive failures that open a closed breaker. */
  failureThreshold: number;
  /** Failure share (0..1] of the window's calls that opens it... */
  failureRate: number;
  /** ...once the window holds at least this many calls. */
  minimumCalls: number;
  /** Length of the rolling window. */
  windowMs: number;
  /** Buckets the window is split into (it rolls one bucket at a time). */
  windowBuckets: number;
  /** How long an opened breaker rejects before admitting probes. */
  openMs: number;
  /** Probes admitted cluster-wide per half-open period. */
  maxProbes: number;
  /** Probe successes that close the breaker (default: `maxProbes`, i.e. all of them). */
  successesToClose: number;
  /** After this, a probe's permit is handed to someone else (its late outcome is ignored). */
  probeTimeoutMs: number;
}

/** The defaults (the probe timeout leaves room for a slow transcription). */
export const defaultSettings: Readonly<BreakerSettings> = Object.freeze({
  failureThreshold: 5,
  failureRate: 0.5,
  minimumCalls: 10,
  windowMs: 60_000,
  windowBuckets: 6,
  openMs: 60_000,
  maxProbes: 1,
  successesToClose: 1,
  probeTimeoutMs: 30_000,
});

/** Per-breaker options: any threshold, plus what the breaker does when its store fails. */
export interface BreakerOptions extends Partial<BreakerSettings> {
  /** Time source (ms), injectable so tests move it instead of sleeping. */
  clock?: Clock;
  /**
   * When the store (Redis) cannot answer `acquire()`: let the call through (default; the
   * breaker must not take an API down with it) or reject it with the store's error.
   */
  failOpen?: boolean;
}

/** Permission to make one call, from {@link CircuitBreaker.acquire}. */
export interface Permit {
  /** The generation the call runs under. */
  readonly generation: number;
  /** Probe slot (1..maxProbes) in half-open; 0 for an ordinary call. */
  readonly probe: number;
  /** Identifies this probe's hold on its slot (a later holder of the slot has another). */
  readonly token: number;
  /** For a probe: when its permit expires (ms). 0 otherwise. */
  readonly expiresAt: number;
  /** True when the store could not answer and the call was let through unrecorded. */
  readonly degraded: boolean;
}

/** A store's answer to an acquire. */
export interface AcquireResult {
  allowed: boolean;
  state: BreakerState;
  generation: number;
  /** Open: open-until. Half-open: the permit's expiry, or when refused, the earliest expiry. */
  until: number;
  probe: number;
  token: number;
  /** The state this call moved the breaker from (open → half-open), or null. */
  from: BreakerState | null;
}

/** A store's answer to a record. */
export interface RecordResult {
  /** False when the outcome was ignored (older generation, expired probe permit). */
  applied: boolean;
  state: BreakerState;
  generation: number;
  /** Open-until when open, else 0. */
  until: number;
  /** Consecutive failures now. */
  failures: number;
  from: BreakerState | null;
}

/** A store's answer to a peek: the state as stored, nothing changed. */
export interface PeekResult {
  state: BreakerState;
  generation: number;
  /** Open-until when open, else 0. */
  until: number;
}

/** What `GET /health` shows per breaker. */
export interface BreakerSnapshot {
  name: string;
  state: BreakerState;
  generation: number;
  /** Consecutive failures (closed). */
  failures: number;
  /** Epoch ms while open (it half-opens at the first call after this), else null. */
  open_until: number | null;
  /** Calls and failures in the rolling window (closed). */
  window_calls: number;
  window_failures: number;
}

/** Where breaker state lives. Each method is one atomic step of the state machine. */
export interface BreakerStore {
  acquire(name: string, now: number, s: BreakerSettings): Promise<AcquireResult>;
  /** Records `count` (default 1) calls with `outcome` under `permit` in one step. */
  record(
    name: string,
    now: number,
    outcome: Outcome,
    permit: Permit,
    s: BreakerSettings,
    count?: number,
  ): Promise<RecordResult>;
  read(name: string, now: number, s: BreakerSettings): Promise<BreakerSnapshot>;
  /**
   * The state, generation and open-until, changing nothing (no probe slot taken). Optional:
   * without it {@link CircuitBreaker.peek} does nothing. Issued before anything is awaited, so
   * it joins the caller's auto-pipeline.
   */
  peek?(name: string): Promise<PeekResult>;
}

/** Thrown instead of calling the API while the circuit is open (or half-open and full). */
export class CircuitOpenError extends Error {
  override name = "CircuitOpenError";
  constructor(
    /** The breaker's name, e.g. `acrcloud`. */
    readonly breaker: string,
    /** When trying again may succeed (≥ 0). */
    readonly retryAfterMs: number,
    readonly state: "open" | "half_open",
  ) {
    super(`circuit "${breaker}" is ${state.replace("_", "-")}; retry in ${retryAfterMs} ms`);
  }
}

/**
 * True when `outcome` (a thrown error, a `Response` or an HTTP status) says the API is in
 * trouble: a timeout (AbortError / TimeoutError), a network error (fetch's TypeError), HTTP
 * 5xx or 429. Other 4xx are our own bad requests and count as success: the API answered. An
 * error carrying a `status` (OpenAI SDK's APIError) is judged by it; any other error counts as
 * a failure, because an unexplained error from an upstream call is more likely the upstream's
 * (a truncated body, a reset connection) than ours.
 */
export function isBreakerFailure(outcome: unknown): boolean {
  if (typeof outcome === "number") return outcome === 429 || outcome >= 500;
  if (outcome instanceof Response) return isBreakerFailure(outcome.status);
  if (typeof outcome === "object" && outcome !== null) {
    const status = (outcome as { status?: unknown }).status;
    if (typeof status === "number" && status >= 400) return isBreakerFailure(status);
  }
  return true;
}

/** Decides a call's outcome from what it returned (`threw` false) or threw (`threw` true). */
export type Classifier = (result: unknown, threw: boolean) => Outcome;

/** Thrown: {@link isBreakerFailure}. Returned: a `Response` by its status, anything else success. */
export const defaultClassifier: Classifier = (result, threw) => {
  if (threw || result instanceof Response) {
    return isBreakerFailure(result) ? "failure" : "success";
  }
  return "success";
};

/** Resolves options to settings, refusing combinations the state machine can't honour. */
export function resolveSettings(options: Partial<BreakerSettings> = {}): BreakerSettings {
  const defined = Object.fromEntries(
    Object.entries(options).filter(([k, v]) => v !== undefined && k in defaultSettings),
  ) as Partial<BreakerSettings>;
  const s = { ...defaultSettings, ...defined };
  if (defined.successesToClose === undefined) s.successesToClose = s.maxProbes;
  const ints: (keyof BreakerSettings)[] = [
    "failureThreshold",
    "minimumCalls",
    "windowMs",
    "windowBuckets",
    "openMs",
    "maxProbes",
    "successesToClose",
    "probeTimeoutMs",
  ];
  for (const k of ints) {
    if (!Number.isInteger(s[k]) || s[k] < 1) {
      throw new RangeError(`breaker ${k} must be an integer ≥ 1`);
    }
  }
  if (!(s.failureRate > 0 && s.failureRate <= 1)) {
    throw new RangeError("breaker failureRate must be in (0, 1]");
  }
  if (s.successesToClose > s.maxProbes) {
    throw new RangeError("breaker successesToClose must not exceed maxProbes");
  }
  return s;
}
