import { assert, assertEquals, assertRejects } from "../../scripts/testing/assert.ts";
import { startFakeServer } from "../../scripts/testing/fake_http.ts";
import { type TestRedis, testRedis } from "../../scripts/testing/test_redis.ts";
import { CircuitBreaker, CircuitOpenError, RedisBreakerStore } from "./breaker.ts";
import { Budget } from "../http/budget.ts";
import { callUpstream, upstream, upstreamFailure } from "./upstream.ts";
import { type OpenAIApis, withClient } from "../providers/openai.ts";

let now = 1_000_000;
/** The breakers' Redis (bridge + key prefix), one per test. */
let redisFx: TestRedis;
function api(name: string, options: { timeoutMs?: number; attempts?: number } = {}) {
  return upstream(name, {
    timeoutMs: options.timeoutMs ?? 2000,
    retry: { attempts: options.attempts ?? 3, baseMs: 5, jitter: 0 },
    breaker: new CircuitBreaker({
      name,
      store: new RedisBreakerStore(redisFx.redis, `${redisFx.prefix}breaker:`),
      clock: () => now,
    }),
  });
}

/** A JSON GET the way a provider client makes it: non-2xx throws with the status. */
async function getJson(url: string, signal: AbortSignal) {
  const res = await fetch(url, { signal });
  if (!res.ok) {
    await res.body?.cancel();
    throw Object.assign(new Error(`status ${res.status}`), {
      status: res.status,
      headers: res.headers,
    });
  }
  return await res.json();
}

const it = (name: string, fn: () => Promise<void>) =>
  Deno.test({
    name,
    fn: async () => {
      redisFx = await testRedis();
      try {
        await fn();
      } finally {
        await redisFx.close();
      }
    },
    sanitizeOps: false,
    sanitizeResources: false,
  });

it("a hanging provider: the call ends at the request budget and the request is aborted", async () => {
  const fake = startFakeServer();
  fake.behave({ hang: true });
  // Long enough for the request to reach the fake even when the suite loads the machine (the
  // breaker's Redis round trip comes first); the call must end at it, not at the 2 s timeout.
  const budget = new Budget(800);
  const start = performance.now();
  const err = await callUpstream(api("hang"), (signal) => getJson(fake.url, signal), { budget })
    .catch((e) => e);
  const elapsed = performance.now() - start;
  assertEquals(upstreamFailure(err), "timeout");
  assert(elapsed < 1500, `took ${elapsed} ms`);
  assertEquals(fake.calls.length, 1); // not idempotent: no retry
  await fake.close(); // waits for the handler, which has seen the abort
  assertEquals(fake.aborted, 1);
});

it("its own timeout applies when shorter than the budget; idempotent calls retry within the budget", async () => {
  const fake = startFakeServer();
  fake.behave({ hang: true });
  const budget = new Budget(1000);
  const start = performance.now();
  await assertRejects(() =>
    callUpstream(api("own", { timeoutMs: 100 }), (s) => getJson(fake.url, s), {
      budget,
      idempotent: true,
    })
  );
  const elapsed = performance.now() - start;
  assertEquals(fake.calls.length, 3);
  assert(elapsed < 600, `took ${elapsed} ms`);
  await fake.close();
});

it("retries 5xx for idempotent calls or with an idempotency key, never otherwise, never 4xx", async () => {
  const fake = startFakeServer();
  fake.behave({ status: 503 });
  await assertRejects(() =>
    callUpstream(api("a"), (s) => getJson(fake.url, s), { idempotent: true })
  );
  assertEquals(fake.calls.length, 3);
  await assertRejects(() => callUpstream(api("b"), (s) => getJson(fake.url, s)));
  assertEquals(fake.calls.length, 4);
  await assertRejects(() =>
    callUpstream(api("c"), (s) => getJson(fake.url, s), { idempotencyKey: "k1" })
  );
  assertEquals(fake.calls.length, 7);
  fake.behave({ status: 400 });
  await assertRejects(() =>
    callUpstream(api("d"), (s) => getJson(fake.url, s), { idempotent: true })
  );
  assertEquals(fake.calls.length, 8);
  await fake.close();
});

it("Retry-After longer than the budget left: no retry, fail now", async () => {
  const fake = startFakeServer();
  fake.behave({ status: 429, headers: { "retry-after": "5" } });
  const start = performance.now();
  await assertRejects(() =>
    callUpstream(api("ra"), (s) => getJson(fake.url, s), {
      budget: new Budget(1000),
      idempotent: true,
    })
  );
  assertEquals(fake.calls.length, 1);
  assert(performance.now() - start < 500);
  await fake.close();
});

it("a failing provider opens the circuit: no more calls reach it; half-open recovers", async () => {
  const fake = startFakeServer(() => ({ answer: 42 }));
  fake.behave({ status: 500 });
  const flaky = api("flaky", { attempts: 1 });
  for (let i = 0; i < 5; i++) {
    await assertRejects(() => callUpstream(flaky, (s) => getJson(fake.url, s)));
  }
  assertEquals(fake.calls.length, 5);
  const open = await callUpstream(flaky, (s) => getJson(fake.url, s)).catch((e) => e);
  assert(open instanceof CircuitOpenError);
  assertEquals(upstreamFailure(open), "circuit_open");
  assertEquals(fake.calls.length, 5);
  now += 61_000; // open period over: the next call is the probe
  fake.behave({});
  assertEquals(await callUpstream(flaky, (s) => getJson(fake.url, s)), { answer: 42 });
  assertEquals((await flaky.breaker.state()).state, "closed");
  await fake.close();
});

it("OpenAI's client is loaded inside the call (withClient): a slow load ends at the timeout", async () => {
  type Client = Awaited<ReturnType<OpenAIApis["client"]>>;
  const fakeClient = { answer: 7 } as unknown as NonNullable<Client>;
  const answer = (client: NonNullable<Client>) =>
    Promise.resolve((client as unknown as { answer: number }).answer);
  // A load that never ends: the call ends at its own timeout (200 ms), as a slow API would.
  const stuck = { client: () => new Promise<Client>(() => {}) };
  const start = performance.now();
  const err = await callUpstream(
    api("load-stuck", { timeoutMs: 200, attempts: 1 }),
    withClient(stuck, answer),
    { budget: new Budget(5000) },
  ).catch((e) => e);
  const elapsed = performance.now() - start;
  assertEquals(upstreamFailure(err), "timeout");
  assert(elapsed >= 150 && elapsed < 1000, `took ${elapsed} ms`);
  // ... or at the request's budget when that is shorter.
  const budgeted = await callUpstream(
    api("load-budget", { timeoutMs: 5000, attempts: 1 }),
    withClient(stuck, answer),
    { budget: new Budget(150) },
  ).catch((e) => e);
  assertEquals(upstreamFailure(budgeted), "timeout");
  // A load that ends: the call runs with the client.
  const loaded = { client: () => Promise.resolve(fakeClient) };
  assertEquals(await callUpstream(api("load-ok"), withClient(loaded, answer)), 7);
  // Not configured: an error, not a call.
  const none = { client: () => Promise.resolve(null) };
  const missing = await callUpstream(api("load-none", { attempts: 1 }), withClient(none, answer))
    .catch((e) => e);
  assertEquals(upstreamFailure(missing), "error");
  assert(String(missing).includes("not configured"), String(missing));
});
