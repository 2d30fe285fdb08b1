/**
 * A deadline in event-loop time rather than wall time: how long a Redis round trip may take
 * before the caller decides without it, stretched when the loop is too busy to hear the answer.
 *
 * @module
 */

/** How finely {@link loopDeadline} cuts its wait. */
const loopStepMs = 10;

/**
 * Resolves after `ms` of time the event loop was free to spend on other work (a Redis round
 * trip), or after `maxWallMs` of wall time. The wait is cut into short timer steps, and a step
 * that fires late, because the loop was busy running other requests, is credited only its
 * nominal length: a saturated CPU stretches the window instead of using it up, so a round trip
 * that needs a few loop turns (write the request, read the answer, parse it) still gets them.
 * Hand-written: timers measure wall time, and no library measures loop-available time.
 */
export function loopDeadline(
  ms: number,
  maxWallMs: number,
): { done: Promise<void>; cancel(): void } {
  const { promise, resolve } = Promise.withResolvers<void>();
  const start = performance.now();
  let credited = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = () => {
    const wait = Math.max(1, Math.min(loopStepMs, ms - credited));
    const armedAt = performance.now();
    timer = setTimeout(() => {
      const now = performance.now();
      credited += Math.min(now - armedAt, wait);
      if (credited >= ms - 0.5 || now - start >= maxWallMs) resolve();
      else arm();
    }, wait);
  };
  arm();
  return { done: promise, cancel: () => clearTimeout(timer) };
}
