/**
 * The limiters `createDeps` builds itself: the anonymous-read limit per client IP is leased, so
 * a client polling `/health` or fetching `/openapi.json` costs no Redis command per read once
 * it holds a block (counted as Upstash bills them, on a Redis of the test's own).
 *
 * @module
 */
import { assert, assertEquals } from "../scripts/testing/assert.ts";
import { countedRedis } from "../scripts/testing/counted_redis.ts";
import { functionTestEnv } from "../scripts/testing/test_env.ts";

Deno.test({
  name: "anonReads: leased and fail-open; one IP's 100 reads cost ≤ 1 Redis command and ≤ 1 " +
    "HTTP request each (a check per request: ~4)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using env = await functionTestEnv();
    await using redis = await countedRedis();
    const { anonReads } = env.withEnv({
      ...redis.env,
      ANON_READ_RATE_LIMIT_PER_MIN: "1000",
      RATE_LIMIT_DECISION_MS: "2000", // Redis decides, even on a saturated CPU
    });
    assertEquals(anonReads.policy.leased, true);
    assertEquals(anonReads.policy.failOpen, true);
    await anonReads.check("192.0.2.1"); // the script loaded
    const cost = await redis.cost(async () => {
      for (let i = 0; i < 100; i++) assert((await anonReads.check("203.0.113.5")).success);
      return 100;
    });
    console.log(`[cost] anonReads, one IP × 100: ${cost.commands} commands, ${cost.http} HTTP`);
    assert(cost.commands <= 1, `${cost.commands} commands per read`);
    assert(cost.http <= 1, `${cost.http} HTTP requests per read`);
  },
});
