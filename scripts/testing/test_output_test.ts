import { assertEquals } from "./assert.ts";
import { isNoise, TestOutputFilter } from "./test_output.ts";

/**
 * Real `deno test --parallel` output (NO_COLOR, DENO_JOBS=2) of three files: a suite whose
 * cases pass, one whose cases fail (one of them in a nested step), a suite that fails after
 * its cases (its close threw), a test that fails on its own, noisy tests, an ignored one, and
 * a file that throws at import. Stack frames of Deno's internals are left out.
 */
const output = `------- output -------
b1 log
----- output end -----
./b_test.ts => suite ... b1 ... ok (1ms)
./b_test.ts => suite ... b2 ... ok (1ms)
./b_test.ts => suite ... ok (1ms)
------- output -------
setup log
./b_test.ts => setup fails ...----- output end -----
./b_test.ts => setup fails ... FAILED (1ms)
./b_test.ts => skipped ... ignored (1ms)
./b_test.ts => closing ... x ... ok (0ms)
./b_test.ts => closing ... FAILED (16ms)
./a_test.ts => quiet ok ... ok (1ms)
------- post-test output -------
fail log
./a_test.ts => noisy fail ...----- post-test output end -----
./a_test.ts => noisy fail ... FAILED (1ms)
------- post-test output -------
s1 log
----- post-test output end -----
./a_test.ts => suite ... s1 ... ok (1ms)
------- post-test output -------
s2 log
----- post-test output end -----
./a_test.ts => suite ... s2 ... FAILED (1ms)
./a_test.ts => suite ... s3 ... inner ... FAILED (1ms)
./a_test.ts => suite ... s3 ... FAILED (due to 1 failed step) (1ms)
./a_test.ts => suite ... s4 ... ok (1ms)
./a_test.ts => suite ... FAILED (due to 2 failed steps) (1ms)
Uncaught error from ./c_test.ts FAILED

 ERRORS 

noisy fail => ./a_test.ts:2:6
error: Error: boom
    at file:///tmp/par/a_test.ts:2:64

suite ... s2 => ./a_test.ts:5:11
error: Error: s2 boom
    at file:///tmp/par/a_test.ts:5:59

suite ... s3 ... inner => ./a_test.ts:6:45
error: Error: inner boom
    at file:///tmp/par/a_test.ts:6:73

setup fails => ./b_test.ts:5:6
error: Error: setup boom
    at file:///tmp/par/b_test.ts:5:66

closing => ./b_test.ts:7:6
error: Error: close boom
    at file:///tmp/par/b_test.ts:7:99

./c_test.ts (uncaught error)
error: (in promise) Error: top-level boom
    at file:///tmp/par/c_test.ts:1:7

 FAILURES 

noisy fail => ./a_test.ts:2:6
suite ... s2 => ./a_test.ts:5:11
suite ... s3 ... inner => ./a_test.ts:6:45
setup fails => ./b_test.ts:5:6
closing => ./b_test.ts:7:6
./c_test.ts (uncaught error)

FAILED | 3 passed (5 steps) | 5 failed (3 steps) | 1 ignored (1ms)
`;

function run(text: string): { shown: string[]; passed: number; failed: number } {
  const filter = new TestOutputFilter();
  const shown = text.split("\n").flatMap((line) => filter.push(line));
  return { shown, passed: filter.passed, failed: filter.failed };
}

Deno.test("only failing tests and steps are shown, each with its own output, then the errors", () => {
  assertEquals(run(output).shown, [
    "------- output -------",
    "setup log",
    "----- output end -----",
    "./b_test.ts => setup fails ... FAILED (1ms)",
    "./b_test.ts => closing ... FAILED (16ms)",
    "------- post-test output -------",
    "fail log",
    "----- post-test output end -----",
    "./a_test.ts => noisy fail ... FAILED (1ms)",
    "------- post-test output -------",
    "s2 log",
    "----- post-test output end -----",
    "./a_test.ts => suite ... s2 ... FAILED (1ms)",
    "./a_test.ts => suite ... s3 ... inner ... FAILED (1ms)",
    "Uncaught error from ./c_test.ts FAILED",
    "",
    " ERRORS ",
    "",
    "noisy fail => ./a_test.ts:2:6",
    "error: Error: boom",
    "    at file:///tmp/par/a_test.ts:2:64",
    "",
    "suite ... s2 => ./a_test.ts:5:11",
    "error: Error: s2 boom",
    "    at file:///tmp/par/a_test.ts:5:59",
    "",
    "suite ... s3 ... inner => ./a_test.ts:6:45",
    "error: Error: inner boom",
    "    at file:///tmp/par/a_test.ts:6:73",
    "",
    "setup fails => ./b_test.ts:5:6",
    "error: Error: setup boom",
    "    at file:///tmp/par/b_test.ts:5:66",
    "",
    "closing => ./b_test.ts:7:6",
    "error: Error: close boom",
    "    at file:///tmp/par/b_test.ts:7:99",
    "",
    "./c_test.ts (uncaught error)",
    "error: (in promise) Error: top-level boom",
    "    at file:///tmp/par/c_test.ts:1:7",
    "",
    " FAILURES ",
    "",
    "noisy fail => ./a_test.ts:2:6",
    "suite ... s2 => ./a_test.ts:5:11",
    "suite ... s3 ... inner => ./a_test.ts:6:45",
    "setup fails => ./b_test.ts:5:6",
    "closing => ./b_test.ts:7:6",
    "./c_test.ts (uncaught error)",
    "",
    "",
  ]);
});

Deno.test("steps count as tests; a test with steps counts only if it failed on its own", () => {
  // Passed: b1, b2, x, quiet ok, s1, s4. Failed: setup fails, closing (its close threw),
  // noisy fail, s2, inner, the file that threw at import; not the suites "due to" their steps.
  const { passed, failed } = run(output);
  assertEquals({ passed, failed }, { passed: 6, failed: 6 });
});

Deno.test("a passing run prints nothing (the closing count is npm test's own line)", () => {
  const passing = `------- output -------
b1 log
----- output end -----
./b_test.ts => suite ... b1 ... ok (1ms)
./b_test.ts => suite ... b2 ... ok (1ms)
./b_test.ts => suite ... ok (1ms)
./a_test.ts => quiet ok ... ok (1ms)
------- post-test output -------
noisy log
./a_test.ts => noisy ok ...----- post-test output end -----
./a_test.ts => noisy ok ... ok (1ms)
./a_test.ts => skipped ... ignored (0ms)

ok | 3 passed (2 steps) | 0 failed | 1 ignored (40ms)
`;
  assertEquals(run(passing), { shown: [], passed: 4, failed: 0 });
});

Deno.test("type-check progress on stderr is noise; errors are not", () => {
  assertEquals(isNoise("Check file:///work/main/shared/http/app_test.ts"), true);
  assertEquals(isNoise("   0: <unknown>"), true);
  assertEquals(isNoise("error: Module not found"), false);
  assertEquals(isNoise("error: Test failed"), false);
});
