/**
 * What a resolve costs at Upstash (issue 12, goal 2: a cold resolve in at most 4 HTTP
 * requests): HTTP requests as the REST bridge counts them, and Redis commands as Upstash bills
 * them (`INFO commandstats` of a redis-server of this file's own, so a script's inner calls
 * count and nobody else's commands do).
 *
 * @module
 */
import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { CommandCounter, commandDelta, totalCalls } from "../../scripts/bench/costs.ts";
import { freePort, startRedisServer } from "../../scripts/dev/local_services.ts";
import { startRedisBridge } from "../../scripts/dev/redis_bridge.ts";
import { startACRCloudFake } from "../../scripts/testing/fakes/acrcloud.ts";
import { startOpenAIFake } from "../../scripts/testing/fakes/openai.ts";
import { startShazamFake } from "../../scripts/testing/fakes/shazam.ts";
import { seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { settleBackground } from "../../shared/http/background.ts";
import { breakerTrustMs } from "./providers.ts";
import { createApp } from "./app.ts";

// The breakers read the clock through Date.now: the test moves it past what they trust.
const realNow = Date.now;
let clockOffsetMs = 0;

Deno.test("recall-resolve round trips: a cold resolve in ≤ 4 HTTP requests to Upstash", async (t) => {
  Date.now = () => realNow() + clockOffsetMs;
  const openai = startOpenAIFake({
    chat: (req) =>
      req.schemaName === "recall_intent"
        ? {
          lyrics_fragment: null,
          title_hint: null,
          artist_hint: null,
          description: null,
          era: null,
        }
        : {
          candidates: [{
            title: "Paper Harbor",
            artist: "June Byrne",
            album: null,
            year: null,
            confidence: 0.5,
            reason: "the mood",
          }],
        },
    transcribe: () => "a whistled bridge",
  });
  const acr = startACRCloudFake({ identify: () => [] });
  const shazam = startShazamFake({ detect: () => null });
  const server = await startRedisServer(freePort());
  const bridge = await startRedisBridge({
    redisUrl: server.url,
    token: crypto.randomUUID(),
    port: 0,
  });
  const counter = new CommandCounter(server.url);
  const env = await functionTestEnv();
  try {
    await seed(env.db.sql, { users: 20, posts: 0, follows: 0, likes: 0, songs: 50, seed: 5 });
    const users: string[] = (await env.db.sql`select id from profiles order by username`)
      .map((r) => r.id);
    const app = createApp(env.withEnv({
      UPSTASH_REDIS_REST_URL: bridge.url,
      UPSTASH_REDIS_REST_TOKEN: bridge.token,
      OPENAI_API_KEY: "test",
      OPENAI_BASE_URL: openai.baseUrl,
      ACRCLOUD_HOST: acr.baseUrl,
      ACRCLOUD_ACCESS_KEY: acr.accessKey,
      ACRCLOUD_ACCESS_SECRET: acr.accessSecret,
      SHAZAM_API_KEY: shazam.apiKey,
      SHAZAM_BASE_URL: shazam.baseUrl,
      RATE_LIMIT_DECISION_MS: "2000",
    }));
    let nextUser = 0;
    let nextText = 0;
    /** One resolve by a user who never asked before; its answer and what it cost. */
    const resolve = async (body: { text?: string; audio?: string }, user = nextUser++) => {
      const token = await env.keys.mint(users[user]);
      const before = { requests: bridge.stats.requests, commands: await counter.snapshot() };
      let init: RequestInit;
      if (body.audio !== undefined) {
        const form = new FormData();
        form.set(
          "audio",
          new File([new TextEncoder().encode(body.audio)], "clip", { type: "audio/webm" }),
        );
        init = { method: "POST", headers: { authorization: `Bearer ${token}` }, body: form };
      } else {
        init = {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify(body),
        };
      }
      const res = await app.request("/recall-resolve", init);
      const answer = await res.json();
      assertEquals(res.status, 200, JSON.stringify(answer));
      await settleBackground(); // nothing may be left to send after the answer
      const commands = commandDelta(before.commands, await counter.snapshot());
      const cost = {
        requests: bridge.stats.requests - before.requests,
        commands: totalCalls(commands),
        byName: commands,
      };
      return { answer, cost };
    };
    const text = () => `that tune with the whistling bridge, take ${++nextText}`;

    // The first resolve of a fresh server loads the scripts (EVALSHA → NOSCRIPT → EVAL).
    await resolve({ text: text() });

    await t.step("text, nobody asked before: 4 HTTP requests", async () => {
      const { answer, cost } = await resolve({ text: text() });
      assertEquals(answer.providers, { catalog: "no_match", intent: "no_match", candidates: "ok" });
      // Rate limit (both windows) · begin (kept answer, lock, slot) · finish (answer kept, lock
      // and slot released, the two model successes recorded) · the thread list invalidated.
      assertEquals(cost.requests, 4, JSON.stringify(cost));
      // Rate limit 10 (2 scripts: 4 GET, 2 INCRBY, 2 PEXPIRE of a new user's buckets) · begin 9
      // (script, 2 GET, the slot's 5, SET) · finish 5 (script, SET, GET, DEL, ZREM) + one record
      // of both model successes 6 · invalidation 5 (script, SMEMBERS, INCR, LPUSH, LTRIM).
      // Before: 18 HTTP requests, 62 commands.
      assert(cost.commands <= 35, JSON.stringify(cost));
    });

    await t.step(
      "the breakers not heard from lately: their peek shares the begin's request",
      async () => {
        clockOffsetMs += breakerTrustMs + 1;
        const { cost } = await resolve({ text: text() });
        assertEquals(cost.requests, 4, JSON.stringify(cost));
        // The peek: its script and one HMGET.
        assertEquals(cost.byName.hmget, 3, JSON.stringify(cost));
        assert(cost.commands <= 37, JSON.stringify(cost));
      },
    );

    await t.step("audio: transcription, fingerprints and both model steps, still 4", async () => {
      clockOffsetMs += breakerTrustMs + 1; // four breakers to peek at, in the begin's request
      const { answer, cost } = await resolve({ audio: `RIFF clip ${++nextText}` });
      assertEquals(answer.providers.transcription, "ok");
      assertEquals([answer.providers.acrcloud, answer.providers.shazam], ["no_match", "no_match"]);
      assertEquals(cost.requests, 4, JSON.stringify(cost));
      // As text, plus three more breakers, each peeked at (2) and recorded (6).
      assert(cost.commands <= 61, JSON.stringify(cost));
    });

    await t.step(
      "the same question again, another user: the kept answer, 2 HTTP requests",
      async () => {
        const asked = text();
        await resolve({ text: asked });
        const { answer, cost } = await resolve({ text: asked });
        assertEquals(answer.providers.candidates, "ok");
        // This isolate kept the answer: only the rate limit and the invalidation go out.
        assertEquals(cost.requests, 2, JSON.stringify(cost));
        assert(cost.commands <= 15, JSON.stringify(cost));
      },
    );
  } finally {
    Date.now = realNow;
    await counter.close();
    await env.close();
    await bridge.close();
    await server.stop();
    await Promise.all([openai.close(), acr.close(), shazam.close()]);
  }
});
