/**
 * What a profiles read costs in Redis, counted as Upstash bills it (`INFO commandstats` of a
 * Redis of the test's own, HTTP requests counted by the bridge), through the app as the
 * gateway serves it: a warm `?ids=` of 100 profiles is one command and one HTTP request (the
 * cache's invalidation sync), not one per id, and still never serves a profile edited
 * elsewhere.
 *
 * @module
 */
import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { countedRedis } from "../../scripts/testing/counted_redis.ts";
import { seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { settleBackground } from "../../shared/http/background.ts";
import { createApp } from "./app.ts";

Deno.test({
  name: "cost: profiles?ids= (100 ids) warm costs 1 Redis command and 1 HTTP request (was 100 " +
    "GETs); a second isolate's first read 2 (GET + MGET); an edit is seen by the next batch",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using env = await functionTestEnv();
    await using redis = await countedRedis();
    await seed(env.db.sql, { users: 120, posts: 10, seed: 5, songs: 0 });
    const ids: string[] = (await env.db.sql`select id from profiles order by id limit 100`)
      .map((r) => r.id);
    // Two isolates of the function on the counted Redis.
    const [depsHere, depsThere] = [env.withEnv(redis.env), env.withEnv(redis.env)];
    const [here, there] = [createApp(depsHere), createApp(depsThere)];
    const token = await env.keys.mint(ids[0]);
    const auth = { authorization: `Bearer ${token}` };
    const batch = async (app: typeof here) => {
      const res = await app.request(`/profiles?ids=${ids.join(",")}`, { headers: auth });
      assertEquals(res.status, 200);
      const { items } = await res.json() as { items: { id: string; bio: string | null }[] };
      assertEquals(items.map((p) => p.id), ids);
      return items;
    };
    const requests = (app: typeof here, n: number) => async () => {
      for (let i = 0; i < n; i++) await batch(app);
      return n;
    };
    try {
      await batch(here); // cold: loaded, stored in both tiers
      await depsHere.cache.idle(); // a coalescing lock won late is handed back: not a read's cost
      const warm = await redis.cost(requests(here, 20));
      const firstThere = await redis.cost(requests(there, 1));
      const warmThere = await redis.cost(requests(there, 20));
      console.log(
        `[cost] profiles?ids= (100 ids), per request: warm ${warm.commands} commands ` +
          `${JSON.stringify(warm.calls)}, ${warm.http} HTTP; another isolate's first read ` +
          `${firstThere.commands} ${JSON.stringify(firstThere.calls)}, then ${warmThere.commands}`,
      );
      assertEquals(warm.calls, { get: 20 }); // the sequence of invalidations, once a request
      assertEquals(warm.http, 1);
      assertEquals(firstThere.calls, { get: 1, mget: 1 });
      assertEquals(warmThere.commands, 1);

      // An edit here: the other isolate, which holds every profile locally, serves the new one.
      const edit = await here.request("/profiles/me", {
        method: "PATCH",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({ bio: "edited while cached" }),
      });
      assertEquals(edit.status, 200);
      const after = await batch(there);
      assertEquals(after[0].bio, "edited while cached");
      assert(after.slice(1).every((p) => p.bio !== "edited while cached"));
    } finally {
      await settleBackground(); // the edit's second invalidation runs against this Redis
      await Promise.all([depsHere.cache.idle(), depsThere.cache.idle()]);
    }
  },
});
