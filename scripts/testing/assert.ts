/**
 * The few assertions our tests use. (Deno's `@std/assert` lives on JSR, which our machines
 * can't reach; `node:assert` gives the same checks with good diffs.)
 *
 * @module
 */
import nodeAssert from "node:assert/strict";

/** Fails with `message` unless `value` is truthy. */
export function assert(value: unknown, message?: string): asserts value {
  nodeAssert.ok(value, message);
}

/** Deep, strict equality. */
export function assertEquals<T>(actual: T, expected: T, message?: string): void {
  nodeAssert.deepStrictEqual(actual, expected, message);
}

/** `actual` matches `pattern`. */
export function assertMatch(actual: string, pattern: RegExp, message?: string): void {
  nodeAssert.match(actual, pattern, message);
}

/** `fn` rejects (optionally with a message matching `pattern`). */
export async function assertRejects(fn: () => Promise<unknown>, pattern?: RegExp): Promise<void> {
  if (pattern) await nodeAssert.rejects(fn, { message: pattern });
  else await nodeAssert.rejects(fn);
}
