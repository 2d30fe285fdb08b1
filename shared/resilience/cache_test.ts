import { assert, assertEquals, assertMatch, assertRejects } from "../../scripts/testing/assert.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { type TestRedis, testRedis } from "../../scripts/testing/test_redis.ts";
import { countedRedis } from "../../scripts/testing/counted_redis.ts";
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

it("getMany: each key as get() would answer it, in order; local hits, then one MGET, then loads", async (fixture) => {
  const [a, b] = isolates(fixture);
  const opts = () => ({ ttlS: 30 });
  await a.get("m:1", opts(), () => Promise.resolve("one")); // in a's tier and Redis
  await b.get("m:2", opts(), () => Promise.resolve("two")); // in Redis only, for a
  const loads: [string, number][] = [];
  const reads = a.getMany(["m:1", "m:2", "m:3", "m:bad"], opts, (key, i) => {
    loads.push([key, i]);
    return key === "m:bad" ? Promise.reject(new Error("no such")) : Promise.resolve("three");
  });
  const settled = await Promise.allSettled(reads);
  assertEquals(
    settled.slice(0, 3),
    ["one", "two", "three"].map((value) => ({
      status: "fulfilled" as const,
      value,
    })),
  );
  assertEquals(settled[3].status, "rejected");
  assertMatch(String((settled[3] as PromiseRejectedResult).reason), /no such/);
  assertEquals(loads, [["m:3", 2], ["m:bad", 3]]); // only what neither tier had
  assertEquals(a.stats.redisHits, 1);
  // Now all in a's tier (the failure never cached): no loads, no values from Redis.
  const hits = a.stats.localHits;
  assertEquals(
    await Promise.all(a.getMany(["m:3", "m:1", "m:2"], opts, () => Promise.resolve("x"))),
    ["three", "one", "two"],
  );
  assertEquals(a.stats.localHits, hits + 3);
  assertEquals(
    await a.getMany(["m:bad"], opts, () => Promise.resolve("found"))[0],
    "found",
  );
});

it("getMany: an invalidation anywhere reaches the next getMany; stale entries refresh once", async (fixture) => {
  const [writer, reader] = isolates(fixture);
  let name = "old";
  const tagged = (key: string) => ({ ttlS: 300, tags: [`tag:${key}`] });
  const load = (key: string) => Promise.resolve(`${name} ${key}`);
  const keys = ["p:1", "p:2", "p:3"];
  assertEquals(await Promise.all(reader.getMany(keys, tagged, load)), [
    "old p:1",
    "old p:2",
    "old p:3",
  ]);
  name = "new";
  await writer.invalidateTag("tag:p:2");
  assertEquals(await Promise.all(reader.getMany(keys, tagged, load)), [
    "old p:1",
    "new p:2",
    "old p:3",
  ]);
  await writer.invalidate("p:3");
  assertEquals((await Promise.all(reader.getMany(keys, tagged, load)))[2], "new p:3");

  const calls: string[] = [];
  const counted = (key: string) => (calls.push(key), Promise.resolve(`v${calls.length}`));
  const swr = () => ({ ttlS: 10, staleS: 60 });
  await Promise.all(reader.getMany(["s:1"], swr, counted));
  now += 20_000; // stale, not expired: served while exactly one refresh runs
  const stale = await Promise.all(
    Array.from({ length: 5 }, () => reader.getMany(["s:1"], swr, counted)[0]),
  );
  assertEquals(stale, Array(5).fill("v1"));
  await settleBackground();
  assertEquals(calls.length, 2);
  assertEquals(await reader.getMany(["s:1"], swr, counted)[0], "v2");
});

Deno.test({
  name: "cost: 100 keys, warm: getMany costs 1 Redis command and 1 HTTP request (get() per key: " +
    "100 and 1); another isolate's first read 2 (GET + MGET); TTL-only entries 0",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using counted = await countedRedis();
    const make = () => new TwoTierCache({ redis: counted.redis, prefix: "cost:" });
    const [a, b] = [make(), make()];
    const keys = Array.from({ length: 100 }, (_, i) => `k:${i}`);
    const opts = (key: string) => ({ ttlS: 60, tags: [`tag:${key}`] });
    const value = (key: string) => Promise.resolve({ key });
    const once = async (read: () => Promise<unknown>) => (await read(), 1);
    await Promise.all(a.getMany(keys, opts, value)); // cold: loaded and stored
    await a.idle(); // a coalescing lock won late is handed back: not a read's cost
    const perKey = await counted.cost(() =>
      once(() => Promise.all(keys.map((k) => a.get(k, opts(k), () => value(k)))))
    );
    const many = await counted.cost(() => once(() => Promise.all(a.getMany(keys, opts, value))));
    const otherIsolate = await counted.cost(() =>
      once(() => Promise.all(b.getMany(keys, opts, value)))
    );
    const ttlOnly = () => ({ ttlS: 60, invalidation: "ttl" as const });
    await Promise.all(a.getMany(keys.map((k) => `ttl:${k}`), ttlOnly, value));
    await a.idle();
    const warmTtl = await counted.cost(() =>
      once(() => Promise.all(a.getMany(keys.map((k) => `ttl:${k}`), ttlOnly, value)))
    );
    console.log(
      `[cost] 100 keys warm: get() per key ${perKey.commands} commands → getMany ` +
        `${many.commands} (${JSON.stringify(many.calls)}), ${many.http} HTTP; another isolate ` +
        `${otherIsolate.commands} (${
          JSON.stringify(otherIsolate.calls)
        }); TTL-only ${warmTtl.commands}`,
    );
    assertEquals(perKey.commands, 100);
    assertEquals(many, { commands: 1, http: 1, calls: { get: 1 } });
    assertEquals(otherIsolate.calls, { get: 1, mget: 1 });
    assertEquals(otherIsolate.http, 2);
    assertEquals(b.stats.redisHits, 100);
    assertEquals(warmTtl.commands, 0);
    assertEquals(warmTtl.http, 0);
  },
});
