/**
 * Time as the window logic sees it: injectable so contract tests can move it by hand.
 *
 * @module
 */

/** Milliseconds since the epoch. */
export type Clock = () => number;

/** The real clock. */
export const systemClock: Clock = () => Date.now();
