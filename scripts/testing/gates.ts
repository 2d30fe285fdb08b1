/**
 * Synchronisation for tests of coalescing: computations the test finishes when it wants, and a
 * follower's poll wait that says when the follower waits. No sleeps standing in for either.
 *
 * @module
 */

/** A promise resolved from outside: the tests' only synchronisation. */
const latch = <T = void>() => Promise.withResolvers<T>();

/** A compute that counts its runs, signals when it starts, and finishes when told. */
export function gated<T>() {
  const started = latch();
  const finish = latch<T>();
  const fn = {
    runs: 0,
    started: started.promise,
    resolve: finish.resolve,
    reject: finish.reject,
    compute: () => {
      fn.runs++;
      started.resolve();
      return finish.promise;
    },
  };
  return fn;
}

/**
 * A follower's wait between polls that tells the test it is waiting (so the test releases
 * the leader only once the follower has really claimed and lost), then waits for real.
 */
export function observedSleep() {
  let waiting = latch();
  return {
    /** Resolves when the follower starts its next wait. */
    waiting: () => waiting.promise,
    sleep(ms: number) {
      waiting.resolve();
      waiting = latch();
      return new Promise<void>((resolve) => setTimeout(resolve, ms));
    },
  };
}
