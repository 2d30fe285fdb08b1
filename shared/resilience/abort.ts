/**
 * Waiting that an AbortSignal can cut short: the one place both the retry loop and the lease
 * and coalescing code stop waiting when a request's budget runs out or its client leaves.
 *
 * @module
 */

/** Waits `ms` unless `signal` fires first (then rejects with its reason). */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Settles like `work`, or rejects with the signal's reason as soon as `signal` aborts (then
 * `work` runs on unobserved: a later rejection of it is swallowed).
 */
export function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  work.catch(() => {});
  if (signal.aborted) return Promise.reject(signal.reason);
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([work, aborted]).finally(() => signal.removeEventListener("abort", onAbort));
}

/**
 * `attempt`'s value if it arrives within `ms`, else null (a decision window: the caller then
 * fails open or closed). A value that arrives after null was returned goes to `onLate`, so a
 * lock or lease won too late can be handed back at once.
 */
export async function withinMs<T>(
  attempt: Promise<T>,
  ms: number,
  onLate: (value: T) => void,
): Promise<T | null> {
  let timedOut = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => {
      timedOut = true;
      resolve(null);
    }, ms);
  });
  const settled = attempt.then((value) => {
    if (timedOut) onLate(value);
    return value;
  });
  try {
    return await Promise.race([settled, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
