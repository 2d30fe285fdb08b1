/**
 * Benchmark (not a test): a text resolve end to end (auth, limits, catalog, the two model
 * steps, persistence, cache invalidation) against real Postgres and Redis, with the OpenAI
 * fake answering each chat call after 300 ms. Reports p50/p95 and the provider calls per
 * resolve when cold (nothing shared), cached (same text later), and coalesced (many users
 * asking the same new text at once).
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379 \
 *     deno run -A scripts/bench/bench_recall.ts [sequential=200] [concurrent=100] [model_ms=300]
 *
 * @module
 */
import { startOpenAIFake } from "../testing/fakes/openai.ts";
import { seed, syntheticSong } from "../testing/seed.ts";
import { functionTestEnv } from "../testing/test_env.ts";
import { createApp } from "../../functions/recall-resolve/app.ts";

const sequential = Number(Deno.args[0] ?? 200);
const concurrent = Number(Deno.args[1] ?? 100);
const modelMs = Number(Deno.args[2] ?? 300);
const concurrency = 10;

const calls = { intent: 0, candidates: 0 };
const fake = startOpenAIFake({
  chat: (req) => {
    if (req.schemaName === "recall_intent") {
      calls.intent++;
      return {
        lyrics_fragment: null,
        title_hint: null,
        artist_hint: null,
        description: null,
        era: null,
      };
    }
    calls.candidates++;
    return {
      candidates: [{
        title: "Paper Harbor",
        artist: "June Byrne",
        album: null,
        year: null,
        confidence: 0.5,
        reason: "bench",
      }],
    };
  },
});
fake.behave({ delayMs: modelMs }, "/v1/chat/completions");

const env = await functionTestEnv({
  env: {
    OPENAI_API_KEY: "bench",
    OPENAI_BASE_URL: fake.baseUrl,
    RECALL_RATE_LIMIT_PER_MIN: "1000000",
    RECALL_RATE_LIMIT_PER_HOUR: "1000000",
    RECALL_CONCURRENCY: "1000",
    RATE_LIMIT_DECISION_MS: "1000",
  },
});
await seed(env.db.sql, { users: 200, posts: 0, follows: 0, likes: 0, songs: 2000, seed: 9 });
const userIds: string[] = (await env.db.sql`select id from profiles`).map((r) => r.id);
const tokens = await Promise.all(userIds.map((id) => env.keys.mint(id)));
const app = createApp(env.deps);

let n = 0;
async function resolveOnce(text: string, user = n++ % tokens.length): Promise<number> {
  const start = performance.now();
  const res = await app.request("/recall-resolve", {
    method: "POST",
    headers: { authorization: `Bearer ${tokens[user]}`, "content-type": "application/json" },
    body: JSON.stringify({ text }),
  });
  const ms = performance.now() - start;
  if (res.status !== 200) throw new Error(`${res.status}: ${await res.text()}`);
  await res.body?.cancel();
  return ms;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const rows: Record<string, string | number>[] = [];
async function measure(
  name: string,
  resolves: number,
  run: () => Promise<number[]>,
): Promise<void> {
  const before = { ...calls };
  const times = (await run()).sort((a, b) => a - b);
  rows.push({
    case: name,
    resolves,
    p50_ms: Math.round(percentile(times, 50)),
    p95_ms: Math.round(percentile(times, 95)),
    intent_calls_per_resolve: Math.round((calls.intent - before.intent) / resolves * 1000) / 1000,
    candidates_calls_per_resolve:
      Math.round((calls.candidates - before.candidates) / resolves * 1000) / 1000,
  });
}

let seq = 0;
const unseen = () => `that tune with the whistling bridge take ${seq++}`;

for (let i = 0; i < 10; i++) await resolveOnce(unseen()); // warm: connections, scripts

await measure("cold, not conclusive (intent → large model), sequential", sequential, async () => {
  const times: number[] = [];
  for (let i = 0; i < sequential; i++) times.push(await resolveOnce(unseen()));
  return times;
});

await measure(`cold, not conclusive, ${concurrency} in flight`, concurrent, async () => {
  const texts = Array.from({ length: concurrent }, unseen);
  const times: number[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < texts.length) times.push(await resolveOnce(texts[next++]));
  }));
  return times;
});

await measure("cold, catalog names the song (intent only)", 50, async () => {
  const times: number[] = [];
  for (let i = 0; i < 50; i++) {
    const s = syntheticSong(i * 7, 9);
    times.push(await resolveOnce(`${s.title} ${s.artist}`));
  }
  return times;
});

const repeated = "the one with the whistling bridge, cached";
await resolveOnce(repeated);
await measure("cached (same text within the answer TTL), other users", 100, async () => {
  const times: number[] = [];
  for (let i = 0; i < 100; i++) times.push(await resolveOnce(repeated));
  return times;
});

await measure("coalesced: 50 users, same new text at once", 50, () => {
  const text = "the one with the whistling bridge, trending";
  return Promise.all(Array.from({ length: 50 }, (_, i) => resolveOnce(text, i)));
});

console.table(rows);
console.log(`model delay ${modelMs} ms per chat call; ${Deno.build.os}/${Deno.build.arch}`);
await fake.close();
await env.close();
Deno.exit(0);
