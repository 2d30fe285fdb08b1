/**
 * What `npm test` shows of `deno test --parallel`'s output: only the failures, in full (each
 * failed test's or step's output and its error), so the result isn't lost in hundreds of "ok"
 * lines, and the counts for the closing line. Feed it stdout line by line (NO_COLOR); it
 * returns the lines to print.
 *
 * A file's `suite` (test_http.ts) is one Deno test whose cases are steps, so what is counted
 * and shown is the innermost level: steps, and tests without steps. A test that failed only
 * "due to failed steps" is not shown (its failed steps are); one that failed on its own (a
 * suite's setup or close threw) is, and counts as one failure.
 *
 * With --parallel, Deno writes a test's captured output just before its result line, framed
 * by `------- output -------` … `----- output end -----`; tests of files that run at the same
 * time may interleave there, so the output shown with a failure can hold lines of another
 * file's test.
 *
 * @module
 */

/** `./a_test.ts => suite ... case ... FAILED (due to 1 failed step) (2ms)`. */
const result = /^(\S+) => (.+) \.\.\. (ok|FAILED|ignored)\b(.*)$/;
/** A file that failed outside any test (at import, or a dangling promise). */
const uncaught = /^Uncaught error from (\S+) FAILED$/;
const outputStart = /^-{7} (post-test )?output -{7}$/;
const outputEnd = /-{5} (post-test )?output end -{5}$/;
const summary = /^(ok|FAILED) \| \d+ passed/;

/** A line filter over `deno test --parallel` output, counting tests and steps. */
export class TestOutputFilter {
  /** Steps, and tests without steps, that passed. */
  passed = 0;
  /** Steps, tests without steps, tests that failed on their own, files that failed to run. */
  failed = 0;
  /** Output captured since the last result: it belongs to the next one. */
  #output: string[] = [];
  #inOutput = false;
  /** `file\0name` of every test or step that had a step reported under it. */
  readonly #parents = new Set<string>();
  /** In the ERRORS / FAILURES sections at the end: everything is shown. */
  #inReport = false;

  /** Takes one line; returns what to print now. */
  push(line: string): string[] {
    if (this.#inReport) return summary.test(line) ? [] : [line];
    if (line.trim() === "ERRORS" || line.trim() === "FAILURES") {
      this.#inReport = true;
      return ["", line];
    }
    if (outputStart.test(line)) {
      this.#inOutput = true;
      this.#output.push(line);
      return [];
    }
    if (this.#inOutput && outputEnd.test(line)) {
      // Deno prints the end marker after the pending test's name: `./a.ts => x ...-----…`.
      this.#inOutput = false;
      this.#output.push(line.slice(line.search(outputEnd)));
      return [];
    }
    const lost = line.match(uncaught);
    if (lost) {
      this.failed++;
      return this.#shown(line);
    }
    const done = line.match(result);
    if (!done) {
      if (this.#inOutput) this.#output.push(line);
      return [];
    }
    const [, file, name, outcome, rest] = done;
    const parts = name.split(" ... ");
    for (let i = 1; i < parts.length; i++) {
      this.#parents.add(`${file}\0${parts.slice(0, i).join(" ... ")}`);
    }
    const leaf = !this.#parents.has(`${file}\0${name}`);
    if (outcome === "ok") {
      if (leaf) this.passed++;
      this.#output = [];
      this.#inOutput = false;
      return [];
    }
    if (outcome === "FAILED" && (leaf || !/^ \(due to \d+ failed steps?\)/.test(rest))) {
      this.failed++;
      return this.#shown(line);
    }
    this.#output = [];
    this.#inOutput = false;
    return [];
  }

  /** A failure's result line, after the output that came before it. */
  #shown(line: string): string[] {
    if (this.#inOutput) this.#output.push("----- output end -----");
    const shown = [...this.#output, line];
    this.#output = [];
    this.#inOutput = false;
    return shown;
  }
}

/** Whether a `deno test` stderr line is noise (type-check progress, an empty backtrace). */
export function isNoise(stderrLine: string): boolean {
  return /^(Check|Download) /.test(stderrLine) || /^Stack backtrace:$/.test(stderrLine) ||
    /^\s+\d+: <unknown>$/.test(stderrLine);
}
