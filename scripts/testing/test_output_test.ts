import { assertEquals } from "./assert.ts";
import { isNoise, TestOutputFilter } from "./test_output.ts";

/** Real `deno test` output (NO_COLOR) of one file with passing, noisy and failing tests. */
const output = `running 4 tests from ./a_test.ts
quiet ok ... ok (1ms)
noisy ok ...
------- output -------
log line
----- output end -----
noisy ok ... ok (1ms)
noisy fail ...
------- output -------
fail log
----- output end -----
noisy fail ... FAILED (2ms)
steps ...
  s1 ... ok (0ms)
  s2 ... FAILED (0ms)
steps ... FAILED (due to 1 failed step) (2ms)
running 1 test from ./b_test.ts
fine ... ok (0ms)

 ERRORS 

noisy fail => ./a_test.ts:3:6
error: Error: boom
    at file:///tmp/tt/a_test.ts:3:91

 FAILURES 

noisy fail => ./a_test.ts:3:6
steps ... s2 => ./a_test.ts:4:73

FAILED | 3 passed (1 step) | 2 failed (1 step) (40ms)
`;

function run(text: string): string[] {
  const filter = new TestOutputFilter();
  return text.split("\n").flatMap((line) => filter.push(line));
}

Deno.test("only failures are shown, each with its own output and error, in full", () => {
  assertEquals(run(output), [
    "in ./a_test.ts:",
    "noisy fail ...",
    "------- output -------",
    "fail log",
    "----- output end -----",
    "noisy fail ... FAILED (2ms)",
    "steps ...",
    "  s1 ... ok (0ms)",
    "  s2 ... FAILED (0ms)",
    "steps ... FAILED (due to 1 failed step) (2ms)",
    "",
    " ERRORS ",
    "",
    "noisy fail => ./a_test.ts:3:6",
    "error: Error: boom",
    "    at file:///tmp/tt/a_test.ts:3:91",
    "",
    " FAILURES ",
    "",
    "noisy fail => ./a_test.ts:3:6",
    "steps ... s2 => ./a_test.ts:4:73",
    "",
    "",
  ]);
});

Deno.test("a passing run prints nothing (the closing count is npm test's own line)", () => {
  const passing =
    output.split("\n").filter((l) => !/FAILED|ERRORS|FAILURES|=>|error:| {4}at/.test(l))
      .join("\n") + "\nok | 5 passed | 0 failed (40ms)\n";
  assertEquals(run(passing).filter((l) => l !== ""), []);
});

Deno.test("type-check progress on stderr is noise; errors are not", () => {
  assertEquals(isNoise("Check file:///work/main/shared/http_test.ts"), true);
  assertEquals(isNoise("   0: <unknown>"), true);
  assertEquals(isNoise("error: Module not found"), false);
  assertEquals(isNoise("error: Test failed"), false);
});
