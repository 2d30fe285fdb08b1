/**
 * `TwoTierCache.invalidateTags` (cache.ts): several tags dropped in one round trip, their
 * members read inside the script, the change seen by every isolate's next read.
 *
 * Run: `TEST_REDIS_URL=redis://127.0.0.1:6379 deno test -A shared/resilience/cache_tags_test.ts`
 */
import { assertEquals } from "../../scripts/testing/assert.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { testRedis } from "../../scripts/testing/test_redis.ts";
import { TwoTierCache } from "./cache.ts";

const it = suite("redis: cache tags", testRedis);

it("invalidateTags: one request drops every entry of those tags, in every isolate", async (fixture) => {
  const prefix = `${fixture.prefix}tags:`;
  const [writer, reader] = [0, 1].map(() => new TwoTierCache({ redis: fixture.redis, prefix }));
  let version = "old";
  const load = (key: string) => () => Promise.resolve(`${key} ${version}`);
  const entries: [string, string[]][] = [
    ["thread:1", ["thread:1", "threads:u"]],
    ["threads:u:page1", ["threads:u"]],
    ["thread:2", ["thread:2"]], // another tag: stays
  ];
  for (const [key, tags] of entries) {
    for (const cache of [writer, reader]) await cache.get(key, { ttlS: 300, tags }, load(key));
  }
  await writer.invalidateTags(["nothing"]); // loads the script (a fresh server: NOSCRIPT, EVAL)
  version = "new";
  const before = fixture.bridge.stats.requests;
  await writer.invalidateTags(["thread:1", "threads:u", "never-used"]);
  assertEquals(fixture.bridge.stats.requests - before, 1, "one script, no SMEMBERS before it");
  for (const cache of [reader, writer]) {
    const read = (key: string, tags: string[]) => cache.get(key, { ttlS: 300, tags }, load(key));
    assertEquals(await read(...entries[0]), "thread:1 new");
    assertEquals(await read(...entries[1]), "threads:u:page1 new");
    assertEquals(await read(...entries[2]), "thread:2 old");
  }
  // Redis's tier too: a third isolate, with nothing of its own, reads the new values.
  const fresh = new TwoTierCache({ redis: fixture.redis, prefix });
  assertEquals(await fresh.get("thread:1", { ttlS: 300 }, load("thread:1")), "thread:1 new");
  assertEquals(await fresh.get("thread:2", { ttlS: 300 }, load("thread:2")), "thread:2 old");
});
