import { assert, assertEquals, assertRejects } from "../../scripts/testing/assert.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { type TestRedis, testRedis } from "../../scripts/testing/test_redis.ts";
import { settleBackground } from "../http/background.ts";
import { TwoTierCache } from "./cache.ts";

let now = 1_000_000;
const clock = () => now;

/** Two caches sharing one Redis: two isolates of the same function. */
function isolates(
  fixture: TestRedis,
  options: { maxEntries?: number; maxBytes?: number } = {},
) {
  const prefix = `${fixture.prefix}${crypto.randomUUID().slice(0, 6)}:`;
  const make = () =>
    new TwoTierCache({
      redis: fixture.redis,
      prefix,
      clock,
      ...options,
    });
  return [make(), make()] as const;
}

/** A loader that counts its calls and returns `value()`. */
function loader<T>(value: () => T) {
  const fn = () => {
    fn.calls++;
    return Promise.resolve(value());
  };
  fn.calls = 0;
  return fn;
}

const it = suite("redis: two-tier cache", testRedis);

it("read-through: one load, then hits until the TTL passes", async (fixture) => {
  const [a] = isolates(fixture);
  const load = loader(() => ({ n: 1 }));
  assertEquals(await a.get("k", { ttlS: 10 }, load), { n: 1 });
  assertEquals(await a.get("k", { ttlS: 10 }, load), { n: 1 });
  assertEquals(load.calls, 1);
  assertEquals(a.stats.localHits, 1);
  now += 11_000;
  await a.get("k", { ttlS: 10 }, load);
  assertEquals(load.calls, 2);
});

it("concurrent misses share one load; failures are shared but never cached", async (fixture) => {
  const [a] = isolates(fixture);
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const slow = loader(() => "v");
  const results = Array.from(
    { length: 20 },
    () => a.get("k", { ttlS: 10 }, () => gate.then(slow)),
  );
  release();
  assertEquals(await Promise.all(results), Array(20).fill("v"));
  assertEquals(slow.calls, 1);
  let fails = 0;
  const failing = () => Promise.reject(new Error(`boom ${++fails}`));
  await Promise.all([
    assertRejects(() => a.get("bad", { ttlS: 10 }, failing), /boom 1/),
    assertRejects(() => a.get("bad", { ttlS: 10 }, failing), /boom 1/),
  ]);
  assertEquals(await a.get("bad", { ttlS: 10 }, () => Promise.resolve("ok")), "ok");
});

it("stale-while-revalidate: stale answers while exactly one refresh runs", async (fixture) => {
  const [a] = isolates(fixture);
  let version = 1;
  const load = loader(() => version);
  await a.get("k", { ttlS: 10, staleS: 60 }, load);
  version = 2;
  now += 20_000; // stale, not expired
  const answers = await Promise.all(
    Array.from({ length: 10 }, () => a.get("k", { ttlS: 10, staleS: 60 }, load)),
  );
  assertEquals(answers, Array(10).fill(1));
  await settleBackground();
  assertEquals(load.calls, 2);
  assertEquals(await a.get("k", { ttlS: 10, staleS: 60 }, load), 2);
  now += 100_000; // past stale too: a plain miss
  version = 3;
  assertEquals(await a.get("k", { ttlS: 10, staleS: 60 }, load), 3);
});

it("invalidation by key and by tag reaches the next read in every isolate", async (fixture) => {
  const [a, reader] = isolates(fixture);
  let name = "old";
  const load = () => Promise.resolve({ name });
  await a.get("profile:1", { ttlS: 300, tags: ["profile:1"] }, load);
  await reader.get("profile:1", { ttlS: 300, tags: ["profile:1"] }, load);
  name = "new";
  await a.invalidate("profile:1");
  assertEquals(
    (await reader.get("profile:1", { ttlS: 300, tags: ["profile:1"] }, load)).name,
    "new",
  );

  await reader.get(
    "list:1",
    { ttlS: 300, tags: ["profile:1"] },
    () => Promise.resolve("old list"),
  );
  await a.invalidateTag("profile:1");
  assertEquals(
    await reader.get("list:1", { ttlS: 300 }, () => Promise.resolve("new list")),
    "new list",
  );
});

it("the local tier is bounded by entries and bytes, least recently used out first", async (fixture) => {
  const [a] = isolates(fixture, { maxEntries: 3, maxBytes: 1000 });
  for (const k of ["a", "b", "c"]) await a.get(k, { ttlS: 60 }, () => Promise.resolve(k));
  await a.get("a", { ttlS: 60 }, () => Promise.resolve("a")); // touch a: b is now oldest
  await a.get("d", { ttlS: 60 }, () => Promise.resolve("d"));
  assertEquals(a.localSize.entries, 3);
  const hits = a.stats.localHits;
  await a.get("a", { ttlS: 60 }, () => Promise.resolve("a"));
  assertEquals(a.stats.localHits, hits + 1);
  await a.get("big", { ttlS: 60 }, () => Promise.resolve("x".repeat(200)));
  await a.get("big2", { ttlS: 60 }, () => Promise.resolve("y".repeat(200)));
  await a.get("big3", { ttlS: 60 }, () => Promise.resolve("z".repeat(200)));
  assert(a.localSize.bytes <= 1000, `bytes ${a.localSize.bytes}`);
});

it("a value loaded in one isolate is a Redis hit in another", async (fixture) => {
  const [a, b] = isolates(fixture);
  const load = loader(() => [1, "two", { three: 3 }, null]);
  await a.get("shared", { ttlS: 30 }, load);
  assertEquals(await b.get("shared", { ttlS: 30 }, load), [1, "two", { three: 3 }, null]);
  assertEquals(load.calls, 1);
  assertEquals(b.stats.redisHits, 1);
});

it("a local hit of a TTL-only entry costs no round trip; an invalidatable one costs one", async (fixture) => {
  const [a] = isolates(fixture);
  await a.get("ttl-only", { ttlS: 30, invalidation: "ttl" }, () => Promise.resolve(1));
  await a.get("everywhere", { ttlS: 30 }, () => Promise.resolve(2));
  let before = fixture.bridge.stats.requests;
  assertEquals(
    await a.get("ttl-only", { ttlS: 30, invalidation: "ttl" }, () => Promise.resolve(0)),
    1,
  );
  assertEquals(fixture.bridge.stats.requests - before, 0);
  before = fixture.bridge.stats.requests;
  assertEquals(await a.get("everywhere", { ttlS: 30 }, () => Promise.resolve(0)), 2);
  assertEquals(fixture.bridge.stats.requests - before, 1);
});
