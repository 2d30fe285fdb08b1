/**
 * `npm run loadtest -- <scenario>`: runs loadtest/<scenario>.ts against a running stack
 * (BASE_URL, default http://127.0.0.1:54321), writes loadtest/results/<scenario>.{json,txt},
 * and exits 99 when a threshold fails.
 *
 * @module
 */
import { handleSummary, runScenario, type Scenario } from "../loadtest/lib/runner.ts";
import { repoRoot } from "./local_services.ts";

const name = Deno.args[0];
if (!name || !/^[a-z-]+$/.test(name)) {
  console.error("usage: npm run loadtest -- <smoke|feed|recall|mixed|spike|soak>");
  Deno.exit(2);
}
const { scenario } = await import(`${repoRoot}/loadtest/${name}.ts`) as {
  scenario: Scenario<unknown>;
};
const baseUrl = Deno.env.get("BASE_URL") ?? `http://127.0.0.1:${Deno.env.get("PORT") ?? 54321}`;
const result = await runScenario(scenario, baseUrl);
Deno.exit(
  await handleSummary(result, Deno.env.get("RESULTS_DIR") ?? `${repoRoot}/loadtest/results`),
);
