/**
 * Helpers every function's integration tests share.
 *
 * @module
 */
import { assert, assertEquals } from "./assert.ts";

/** A test case of a {@link suite}: it gets the suite's fixture. */
export type Case<F> = (name: string, fn: (fixture: F) => Promise<void> | void) => void;

/**
 * A file's integration tests around one fixture (a test environment, apps, fakes): `setup`
 * runs before the first case, every case runs as a step of one Deno test, in order, and the
 * fixture is closed after the last, whatever failed. Deno std's bdd (`describe`, `beforeAll`,
 * `afterAll`) does the same with steps; it is published only on JSR, which we can't reach.
 * Sanitizers are off: pools keep idle connections and timers between cases, as in production.
 *
 *   const it = suite("feed", async () => { … return { env, app, close: () => env.close() } });
 *   it("pages", async ({ app }) => { … });
 */
export function suite<F extends { close(): Promise<void> }>(
  name: string,
  setup: () => Promise<F>,
): Case<F> {
  const cases: { name: string; fn: (fixture: F) => Promise<void> | void }[] = [];
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn(t) {
      const fixture = await setup();
      try {
        for (const c of cases) {
          await t.step({
            name: c.name,
            fn: () => c.fn(fixture),
            sanitizeOps: false,
            sanitizeResources: false,
          });
        }
      } finally {
        await fixture.close();
      }
    },
  });
  return (name, fn) => void cases.push({ name, fn });
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
