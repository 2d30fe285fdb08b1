/**
 * `npm run loadtest -- <scenario>`: runs loadtest/<scenario>.ts against a running stack
 * (BASE_URL, default http://127.0.0.1:54321), writes loadtest/results/<scenario>.{json,txt},
 * and exits 99 when a threshold fails.
 *
 * @module
 */
import { handleSummary, runScenario, type Scenario } from "../../loadtest/lib/runner.ts";
import { repoRoot } from "../dev/local_services.ts";

/**
 * Null when something answers HTTP at `baseUrl`; else what is wrong, in words a user acts on
 * (rather than the scenario's setup failing later on an empty body).
 */
export async function unreachable(baseUrl: string, timeoutMs = 5000): Promise<string | null> {
  try {
    const res = await fetch(`${baseUrl}/functions/v1/health`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
    await res.body?.cancel();
    return null;
  } catch (err) {
    const text = String((err as Error & { cause?: unknown }).cause ?? err);
    if (/refused/i.test(text)) {
      return `connection refused at ${baseUrl}: is the stack running (npm start)? Set BASE_URL ` +
        "to point elsewhere";
    }
    if (err instanceof DOMException && err.name === "TimeoutError") {
      return `no answer from ${baseUrl} within ${timeoutMs} ms`;
    }
    return `can't reach ${baseUrl}: ${err instanceof Error ? err.message : err}`;
  }
}

if (import.meta.main) {
  const name = Deno.args[0];
  if (!name || !/^[a-z-]+$/.test(name)) {
    console.error("usage: npm run loadtest -- <smoke|feed|recall|mixed|spike|soak>");
    Deno.exit(2);
  }
  const { scenario } = await import(`${repoRoot}/loadtest/${name}.ts`) as {
    scenario: Scenario<unknown>;
  };
  const baseUrl = Deno.env.get("BASE_URL") ??
    `http://127.0.0.1:${Deno.env.get("PORT") ?? 54321}`;
  const problem = await unreachable(baseUrl);
  if (problem) {
    console.error(problem);
    Deno.exit(2);
  }
  const result = await runScenario(scenario, baseUrl);
  Deno.exit(
    await handleSummary(result, Deno.env.get("RESULTS_DIR") ?? `${repoRoot}/loadtest/results`),
  );
}
