/**
 * A second process for breaker_test.ts: with the parent's bridge in UPSTASH_REDIS_REST_URL/TOKEN
 * and its key prefix in REDIS_PREFIX, records `count` (default 5) failures on breaker `name`
 * (default `x`) through the production factory, then prints what the factory and /health's
 * listing give (`{same, listed}`) and last the breaker's state, as JSON lines.
 *
 * Run: `deno run -A shared/testdata/breaker_child.ts x 5`
 *
 * @module
 */
import { breaker, breakerHealth } from "../breaker.ts";

const [name = "x", count = "5"] = Deno.args;
const b = breaker(name);
for (let i = 0; i < Number(count); i++) {
  // A network error, as fetch reports one: counts as a failure.
  await b.run(() => Promise.reject(new TypeError("connection refused"))).catch(() => {});
}
const listed = (await breakerHealth()).map((h) => h.name);
console.log(JSON.stringify({ same: breaker(name) === b, listed }));
console.log(JSON.stringify(await b.state()));
