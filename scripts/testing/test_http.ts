/**
 * Helpers every function's integration tests share.
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";

/**
 * An integration test. Sanitizers are off: the function's module-scope pools and clients
 * (as in production) outlive each test and are closed in the file's last "teardown" test.
 */
export function it(name: string, fn: () => Promise<void> | void): void {
  Deno.test({ name, fn, sanitizeOps: false, sanitizeResources: false });
}

/** Statements the request ran, from its Server-Timing `db;desc="N calls"`. */
export function dbStatements(res: Response): number {
  const match = res.headers.get("server-timing")?.match(/db;dur=[\d.]+;desc="(\d+) calls"/);
  assert(match, `no db metric in ${res.headers.get("server-timing")}`);
  return Number(match[1]);
}

/** `res` is a problem+json answer with `status` (whose body mentions `mentions`). */
export async function assertProblem(
  res: Response,
  status: number,
  mentions?: string,
): Promise<void> {
  assertEquals(res.status, status, await res.clone().text());
  assertEquals(res.headers.get("content-type"), "application/problem+json");
  const body = await res.json();
  assertEquals(body.status, status);
  if (mentions) assert(JSON.stringify(body).includes(mentions), JSON.stringify(body));
}
