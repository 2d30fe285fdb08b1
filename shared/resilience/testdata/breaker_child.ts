/**
 * A second process for breaker_store_test.ts: with the parent's bridge in
 * UPSTASH_REDIS_REST_URL/TOKEN and its key prefix in REDIS_PREFIX, records `count` (default 5)
 * failures on breaker `name` (default `x`) through the production registry (`deps.breakers`,
 * deps built from this process's environment as a function's index.ts builds them), then prints
 * what the registry and /health's listing give (`{same, listed}`) and last the breaker's state,
 * as JSON lines.
 *
 * Run: `deno run -A shared/resilience/testdata/breaker_child.ts x 5`
 *
 * @module
 */
import { createDeps } from "../../deps.ts";

const [name = "x", count = "5"] = Deno.args;
const deps = createDeps(Deno.env.toObject());
const b = deps.breakers.get(name);
for (let i = 0; i < Number(count); i++) {
  // A network error, as fetch reports one: counts as a failure.
  await b.run(() => Promise.reject(new TypeError("connection refused"))).catch(() => {});
}
const listed = (await deps.breakers.health()).map((h) => h.name);
console.log(JSON.stringify({ same: deps.breakers.get(name) === b, listed }));
console.log(JSON.stringify(await b.state()));
await deps.close();
