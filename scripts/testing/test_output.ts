/**
 * What `npm test` shows of `deno test`'s output: only the failures, in full (each failed
 * test's own output and its error), so the result isn't lost in hundreds of "ok" lines.
 * Feed it stdout line by line (NO_COLOR); it returns the lines to print.
 *
 * @module
 */

const fileHeader = /^running \d+ tests? from (.+)$/;
/** `name ... ok (3ms)`, `name ... FAILED (due to 1 failed step) (2ms)`, `name ... ignored`. */
const result = /^(\S.*?) \.\.\. (ok|FAILED|ignored)\b/;
const summary = /^(ok|FAILED) \| \d+ passed/;

/** A line filter over `deno test` output. */
export class TestOutputFilter {
  #file = "";
  #fileShown = false;
  /** The lines of the test running now (its name, captured output, steps). */
  #block: string[] = [];
  /** In the ERRORS / FAILURES sections at the end: everything is shown. */
  #inReport = false;

  /** Takes one line; returns what to print now. */
  push(line: string): string[] {
    if (this.#inReport) return summary.test(line) ? [] : [line];
    if (line.trim() === "ERRORS" || line.trim() === "FAILURES") {
      this.#inReport = true;
      this.#block = [];
      return ["", line];
    }
    const file = line.match(fileHeader);
    if (file) {
      this.#file = file[1];
      this.#fileShown = false;
      this.#block = [];
      return [];
    }
    const done = line.match(result);
    if (!done) {
      this.#block.push(line);
      return [];
    }
    this.#block.push(line);
    if (done[2] !== "FAILED") {
      this.#block = [];
      return [];
    }
    // A top-level result ends the block (a step's result is indented and stays inside it).
    const shown = [
      ...(this.#fileShown ? [] : [`in ${this.#file}:`]),
      ...this.#block.filter((l) => l.trim() !== ""),
    ];
    this.#fileShown = true;
    this.#block = [];
    return shown;
  }
}

/** Whether a `deno test` stderr line is noise (type-check progress, an empty backtrace). */
export function isNoise(stderrLine: string): boolean {
  return /^(Check|Download) /.test(stderrLine) || /^Stack backtrace:$/.test(stderrLine) ||
    /^\s+\d+: <unknown>$/.test(stderrLine);
}
