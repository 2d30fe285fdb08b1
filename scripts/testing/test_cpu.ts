/**
 * CPU load for tests: other requests' CPU-bound work (large multipart parses, JSON dumps)
 * that keeps the event loop busy while the code under test runs.
 *
 * @module
 */

/** Spends `ms` on the CPU; the event loop is blocked meanwhile. */
export function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) { /* the loop is blocked */ }
}

/**
 * Keeps the event loop saturated with `blockMs` blocks (one per macrotask turn, so timers and
 * I/O still get through between them, late) until `stop` is aborted; resolves then.
 */
export function saturate(blockMs: number, stop: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const tick = () => {
      if (stop.aborted) return resolve();
      busy(blockMs);
      setTimeout(tick, 0);
    };
    setTimeout(tick, 0);
  });
}
