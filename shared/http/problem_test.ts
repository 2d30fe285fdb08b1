/** shared/problem: database refusals are 4xx with a fixed detail, never the server's words. */
import { assertEquals } from "../../scripts/testing/assert.ts";
import { toProblem } from "./problem.ts";

/** An error shaped like postgres.js's PostgresError. */
function pgError(code: string, message: string, constraint?: string) {
  return Object.assign(new Error(message), {
    name: "PostgresError",
    code,
    constraint_name: constraint,
    table_name: "follows",
    schema_name: "public",
  });
}

Deno.test("data exceptions (class 22) are a 400 that does not echo the database", () => {
  for (
    const [code, message] of [
      ["22021", 'invalid byte sequence for encoding "UTF8": 0x00'],
      ["22P05", "unsupported Unicode escape sequence"],
      ["22003", 'value "99999999999" is out of range for type integer'],
    ]
  ) {
    const problem = toProblem(pgError(code, message));
    assertEquals([problem.status, problem.code], [400, "invalid_parameter"]);
    assertEquals(problem.detail, "a value in the request is not valid");
  }
});

Deno.test("constraint violations (class 23) are a 4xx, never a 500, naming no constraint", () => {
  const cases: [string, string, number][] = [
    ["23514", 'new row violates check constraint "follows_no_self_follow"', 400],
    ["23502", 'null value in column "body" violates not-null constraint', 400],
    ["23505", 'duplicate key value violates unique constraint "profiles_username_key"', 409],
    ["23503", 'insert violates foreign key constraint "follows_followee_id_fkey"', 409],
    ["23P01", 'conflicting key value violates exclusion constraint "x"', 409],
  ];
  for (const [code, message, status] of cases) {
    const problem = toProblem(pgError(code, message, "c"));
    assertEquals(problem.status, status, code);
    for (const secret of ["constraint", "follows", "profiles", "column"]) {
      assertEquals(problem.detail.includes(secret), false, `${code}: ${problem.detail}`);
    }
  }
});
