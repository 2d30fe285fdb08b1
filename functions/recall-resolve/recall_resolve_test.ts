import { assert, assertEquals, assertMatch } from "../../scripts/testing/assert.ts";
import { startACRCloudFake } from "../../scripts/testing/fakes/acrcloud.ts";
import { type ChatRequest, startOpenAIFake } from "../../scripts/testing/fakes/openai.ts";
import { startShazamFake } from "../../scripts/testing/fakes/shazam.ts";
import { seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { suite } from "../../scripts/testing/test_http.ts";
import { settleBackground } from "../../shared/http/background.ts";
import { createApp } from "./app.ts";

// The breakers, limiters and leases read the clock through Date.now: tests move it instead of
// sleeping through a breaker's open period or a rate window (this file's isolate only).
const realNow = Date.now;
let clockOffsetMs = 0;
const advanceClock = (ms: number) => clockOffsetMs += ms;

const SONG = { title: "Midnight Velvet Echo", artist: "The Rusty Amps" };
const LYRIC = "the neon rain keeps falling on my velvet shoes";

/** A promise resolved from outside: the tests' only synchronisation. */
const latch = <T = void>() => Promise.withResolvers<T>();

// What the fakes "know". Audio markers are ASCII inside the uploaded bytes.
const chatCalls: Record<string, number> = {};
const candidatesAnswer = (_req: ChatRequest) => ({
  candidates: [
    { ...SONG, album: null, year: 1998, confidence: 0.7, reason: "the quoted line" },
    {
      title: "Paper Harbor",
      artist: "June Byrne",
      album: null,
      year: null,
      confidence: 0.2,
      reason: "similar mood",
    },
  ],
});
let shazamGate: Promise<void> | null = null;
let shazamArrivals = 0;
let onShazamArrival = (_n: number) => {};

let textSeq = 0;
/** A text nobody asked before (so no shared answer applies). */
const freshText = (base = "some tune") => `${base} number ${++textSeq}`;

/** A multipart form with `audio` (webm) and `fields`. */
function form(audio: string, fields: Record<string, string> = {}): FormData {
  const f = new FormData();
  f.set("audio", new File([new TextEncoder().encode(audio)], "clip", { type: "audio/webm" }));
  for (const [k, v] of Object.entries(fields)) f.set(k, v);
  return f;
}

interface Answer {
  thread_id: string;
  message_id: string;
  candidates: {
    title: string;
    artist: string;
    album?: string;
    year?: number;
    confidence: number;
    sources: string[];
    song_id?: string;
    reason?: string;
  }[];
  providers: Record<string, string>;
  degraded: boolean;
}

async function ok(res: Response | Promise<Response>): Promise<Answer> {
  const r = await res;
  assertEquals(r.status, 200, await r.clone().text());
  return await r.json();
}

async function problem(res: Response | Promise<Response>, status: number, code?: string) {
  const r = await res;
  const body = await r.json();
  assertEquals(r.status, status, JSON.stringify(body));
  assertEquals(r.headers.get("content-type"), "application/problem+json");
  if (code) assertEquals(body.code, code);
  return { res: r, body };
}

/** The fakes, a database with a catalog, the app, and helpers to call it. */
async function setup() {
  Date.now = () => realNow() + clockOffsetMs;
  const openai = startOpenAIFake({
    chat: (req) => {
      chatCalls[req.schemaName ?? "?"] = (chatCalls[req.schemaName ?? "?"] ?? 0) + 1;
      const text = req.messages.at(-1)?.content ?? "";
      if (req.schemaName === "recall_intent") {
        return {
          lyrics_fragment: text.includes("neon rain") ? LYRIC : null,
          title_hint: null,
          artist_hint: null,
          description: null,
          era: null,
        };
      }
      return candidatesAnswer(req);
    },
    transcribe: (body) => body.includes("SPOKEN") ? "i think it goes neon rain" : "",
  });
  const shazam = startShazamFake({
    detect: async (audio) => {
      if (audio.includes("GATE")) {
        onShazamArrival(++shazamArrivals);
        await shazamGate;
      }
      return audio.includes("KNOWN") ? { ...SONG, album: "Neon Nights", released: "1998" } : null;
    },
  });
  const acr = startACRCloudFake({
    identify: (sample) =>
      sample.includes("KNOWN") ? [{ ...SONG, release_date: "1998-04-01", score: 100 }] : [],
  });

  const env = await functionTestEnv({
    env: {
      OPENAI_API_KEY: "test",
      OPENAI_BASE_URL: openai.baseUrl,
      ACRCLOUD_HOST: acr.baseUrl,
      ACRCLOUD_ACCESS_KEY: acr.accessKey,
      ACRCLOUD_ACCESS_SECRET: acr.accessSecret,
      SHAZAM_API_KEY: shazam.apiKey,
      SHAZAM_BASE_URL: shazam.baseUrl,
      // Short provider timeouts keep the timeout tests quick (production: 10/10/30/10 s).
      RECALL_INTENT_TIMEOUT_MS: "400",
      RECALL_TRANSCRIBE_TIMEOUT_MS: "1500",
      RECALL_CANDIDATES_TIMEOUT_MS: "1500",
      RECALL_RECOGNITION_TIMEOUT_MS: "1500",
      // Fail-closed limits refuse when Redis is slower than this: generous on a busy test machine.
      RATE_LIMIT_DECISION_MS: "2000",
    },
  });
  await seed(env.db.sql, { users: 120, posts: 0, follows: 0, likes: 0, songs: 300, seed: 3 });
  const [song] = await env.db.sql`
    insert into songs (title, artist, album, year, lyrics_excerpt, popularity)
    values (${SONG.title}, ${SONG.artist}, 'Neon Nights', 1998, ${LYRIC}, 5000) returning id`;
  const userIds: string[] = (await env.db.sql`select id from profiles order by username`).map((
    r,
  ) => r.id);
  const app = createApp(env.deps);

  let nextUser = 1;
  /** A fresh user (its own rate limits and slots) and their token. */
  async function newUser(): Promise<{ id: string; token: string }> {
    const id = userIds[nextUser++];
    return { id, token: await env.keys.mint(id) };
  }

  function resolveText(
    token: string | null,
    body: unknown,
    headers: Record<string, string> = {},
  ): Promise<Response> {
    return Promise.resolve(app.request("/recall-resolve", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...headers,
      },
      body: typeof body === "string" ? body : JSON.stringify(body),
    }));
  }

  function resolveAudio(
    token: string,
    audio: string | Uint8Array,
    fields: Record<string, string> = {},
    type = "audio/webm",
  ): Promise<Response> {
    const form = new FormData();
    const bytes = typeof audio === "string" ? new TextEncoder().encode(audio) : audio;
    form.set("audio", new File([bytes as Uint8Array<ArrayBuffer>], "clip", { type }));
    for (const [k, v] of Object.entries(fields)) form.set(k, v);
    return Promise.resolve(app.request("/recall-resolve", {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: form,
    }));
  }

  const providerCalls = () => ({
    intent: chatCalls.recall_intent ?? 0,
    candidates: chatCalls.recall_candidates ?? 0,
    transcription: openai.transcriptionCalls(),
    acrcloud: acr.identifyCalls(),
    shazam: shazam.detectCalls(),
  });

  const close = async () => {
    await settleBackground();
    await env.close();
    await Promise.all([openai.close(), acr.close(), shazam.close()]);
    Date.now = realNow;
  };
  return {
    env,
    app,
    openai,
    acr,
    shazam,
    song,
    newUser,
    resolveText,
    resolveAudio,
    providerCalls,
    close,
  };
}

const it = suite("recall-resolve", setup);

it(
  "text: catalog, intent and the large model answer; merged, persisted in a new thread",
  async ({ env, song, newUser, resolveText, providerCalls }) => {
    const u = await newUser();
    const before = providerCalls();
    const answer = await ok(
      resolveText(u.token, { text: `What's the song that goes "${LYRIC}"?` }),
    );
    assertEquals(answer.providers, { catalog: "ok", intent: "ok", candidates: "ok" });
    assertEquals(answer.degraded, false);
    const [top, second] = answer.candidates;
    assertEquals([top.title, top.artist, top.song_id], [SONG.title, SONG.artist, song.id]);
    assertEquals(top.sources, ["candidates", "catalog"]);
    assertEquals([top.album, top.year], ["Neon Nights", 1998]);
    assert(top.confidence > 0.7 && top.confidence <= 1, `combined ${top.confidence}`);
    assertEquals(top.reason, "the quoted line");
    assertEquals(second.title, "Paper Harbor");
    assert(second.confidence < top.confidence);
    const after = providerCalls();
    assertEquals(after.intent - before.intent, 1);
    assertEquals(after.candidates - before.candidates, 1);

    const messages = await env.db.sql`
      select role, type, content, candidate_json, thread_id, id from recall_messages
      where thread_id = ${answer.thread_id} order by created_at`;
    assertEquals(messages.map((m) => [m.role, m.type]), [["user", "text"], [
      "assistant",
      "candidates",
    ]]);
    assertEquals(messages[1].id, answer.message_id);
    assertEquals(messages[1].candidate_json.candidates[0].song_id, song.id);
    const [thread] = await env.db.sql`
      select user_id, last_message_at, title from recall_threads where id = ${answer.thread_id}`;
    assertEquals(thread.user_id, u.id);

    // Same thread again: two more messages, last_message_at moves.
    const again = await ok(
      resolveText(u.token, { thread_id: answer.thread_id, text: freshText("rusty amps") }),
    );
    assertEquals(again.thread_id, answer.thread_id);
    const [{ count }] = await env.db.sql`
      select count(*)::int from recall_messages where thread_id = ${answer.thread_id}`;
    assertEquals(count, 4);
    const [bumped] = await env.db.sql`
      select last_message_at from recall_threads where id = ${answer.thread_id}`;
    assert(bumped.last_message_at > thread.last_message_at, "last_message_at not bumped");
  },
);

it(
  "a conclusive catalog match skips the large model",
  async ({ song, newUser, resolveText, providerCalls }) => {
    const u = await newUser();
    const before = providerCalls();
    const answer = await ok(resolveText(u.token, { text: "midnight velvet echo rusty amps" }));
    assertEquals(answer.providers, { catalog: "ok", intent: "no_match" });
    assertEquals(answer.candidates[0].song_id, song.id);
    assert(answer.candidates[0].confidence >= 0.85);
    assertEquals(providerCalls().candidates, before.candidates);
  },
);

it(
  "catalog search finds a song from a misspelled title",
  async ({ env, song, newUser, resolveText }) => {
    const u = await newUser();
    const answer = await ok(resolveText(u.token, { text: "Midnite Velvit Echo" }));
    assertEquals(answer.providers.catalog, "ok");
    const hit = answer.candidates.find((c) => c.song_id === song.id);
    assert(hit, JSON.stringify(answer.candidates));
    assert(hit.sources.includes("catalog"));
    // And among the synthetic catalog: a seeded title with two letters swapped.
    const [seeded] = await env.db.sql`
      select id, title, artist from songs where id <> ${song.id} and char_length(title) > 12
      order by popularity desc limit 1`;
    const typo = seeded.title.slice(0, 3) + seeded.title[4] + seeded.title[3] +
      seeded.title.slice(5);
    const rows = await env.db.sql`select id, matched from search_songs(${typo}, 5)`;
    assert(rows.some((r) => r.id === seeded.id), `${typo} → ${JSON.stringify(rows)}`);
  },
);

it(
  "audio: ACRCloud and Shazam (signed, in parallel with transcription) answer; the large model is skipped",
  async ({ env, acr, shazam, song, newUser, resolveAudio, providerCalls }) => {
    const u = await newUser();
    const before = providerCalls();
    const answer = await ok(resolveAudio(u.token, "RIFF KNOWN audio bytes 1"));
    assertEquals(answer.providers, { acrcloud: "ok", shazam: "ok", transcription: "no_match" });
    assertEquals(answer.degraded, false);
    const [top] = answer.candidates;
    assertEquals([top.title, top.song_id, top.sources], [SONG.title, song.id, [
      "acrcloud",
      "shazam",
    ]]);
    assertEquals(top.year, 1998);
    assert(top.confidence >= 0.99);
    const after = providerCalls();
    assertEquals(after.acrcloud - before.acrcloud, 1);
    assertEquals(after.shazam - before.shazam, 1);
    assertEquals(after.transcription - before.transcription, 1);
    assertEquals(after.candidates - before.candidates, 0);
    assertEquals(acr.badSignatures, 0);
    assertEquals(shazam.badKeys, 0);
    const [userMessage] = await env.db.sql`
      select type from recall_messages where thread_id = ${answer.thread_id} and role = 'user'`;
    assertEquals(userMessage.type, "audio");

    // Spoken words: the transcript feeds the catalog and the intent step.
    const spoken = await ok(
      resolveAudio(u.token, "SPOKEN words 2", { thread_id: answer.thread_id }),
    );
    assertEquals(spoken.providers.transcription, "ok");
    assertEquals(spoken.providers.catalog, "ok");
    assertEquals(spoken.providers.intent, "ok");
    assertEquals(spoken.candidates[0].song_id, song.id);
    const [spokenMessage] = await env.db.sql`
      select content from recall_messages where thread_id = ${answer.thread_id} and role = 'user'
      order by created_at desc limit 1`;
    assertEquals(spokenMessage.content, "i think it goes neon rain");
  },
);

it(
  "idempotent replay: same answer, no provider, database or new messages; concurrent duplicates run once",
  async ({ env, newUser, resolveText, providerCalls }) => {
    const u = await newUser();
    const text = freshText("idempotent");
    const first = await resolveText(u.token, { text }, { "idempotency-key": "key-1" });
    const firstBody = await ok(first);
    const calls = providerCalls();
    const replay = await resolveText(u.token, { text }, { "idempotency-key": "key-1" });
    assertEquals(replay.headers.get("idempotent-replayed"), "true");
    assertEquals(await ok(replay), firstBody);
    assertEquals(providerCalls(), calls);
    const [{ count }] = await env.db.sql`
      select count(*)::int from recall_messages where user_id = ${u.id}`;
    assertEquals(count, 2);

    // The same key for another request is refused.
    await problem(
      resolveText(u.token, { text: freshText() }, { "idempotency-key": "key-1" }),
      422,
    );
    // Another user's identical key is theirs alone.
    const other = await newUser();
    const theirs = await ok(resolveText(other.token, { text }, { "idempotency-key": "key-1" }));
    assert(theirs.thread_id !== firstBody.thread_id);

    // Concurrent duplicates: one execution, one pair of messages, the same answer for both.
    const dupText = freshText("duplicate");
    const before = providerCalls();
    const [a, b] = await Promise.all([
      resolveText(u.token, { text: dupText }, { "idempotency-key": "key-2" }).then(ok),
      resolveText(u.token, { text: dupText }, { "idempotency-key": "key-2" }).then(ok),
    ]);
    assertEquals(a, b);
    assertEquals(providerCalls().intent - before.intent, 1);
    const [{ count: after }] = await env.db.sql`
      select count(*)::int from recall_messages where user_id = ${u.id}`;
    assertEquals(after, 4);
  },
);

it(
  "Idempotency-Key: a body that differs byte-wise is a 422, even when it normalizes the same",
  async ({ app, newUser, resolveText, providerCalls }) => {
    const u = await newUser();
    const text = freshText("bytewise");
    const raw = JSON.stringify({ text });
    const first = await ok(resolveText(u.token, raw, { "idempotency-key": "k-bytes" }));
    const calls = providerCalls();
    // Byte-identical: replayed.
    const replay = await resolveText(u.token, raw, { "idempotency-key": "k-bytes" });
    assertEquals(replay.headers.get("idempotent-replayed"), "true");
    assertEquals(await ok(replay), first);
    // Same meaning once trimmed / re-spaced / re-cased, other bytes: refused, nothing runs.
    for (
      const other of [
        JSON.stringify({ text: `  ${text}  ` }),
        `{ "text" : ${JSON.stringify(text)} }`,
        JSON.stringify({ text, thread_id: first.thread_id }),
      ]
    ) {
      const { body } = await problem(
        resolveText(u.token, other, { "idempotency-key": "k-bytes" }),
        422,
      );
      assertEquals(body.invalid_params[0].name, "Idempotency-Key");
    }
    // A thread id in capitals is the same thread, but not the same request bytes.
    const inThread = JSON.stringify({ text: freshText(), thread_id: first.thread_id });
    await ok(resolveText(u.token, inThread, { "idempotency-key": "k-thread" }));
    await problem(
      resolveText(u.token, inThread.replace(first.thread_id, first.thread_id.toUpperCase()), {
        "idempotency-key": "k-thread",
      }),
      422,
    );
    assertEquals(providerCalls().intent - calls.intent, 1); // only the k-thread request ran
    // A form's boundary is framing, not content: a retry with a new boundary replays; a field
    // that differs only in a trailing space is another request.
    const v = await newUser(); // (10 resolves a minute each)
    const post = (fields: Record<string, string>) =>
      Promise.resolve(app.request("/recall-resolve", {
        method: "POST",
        headers: { authorization: `Bearer ${v.token}`, "idempotency-key": "k-form" },
        body: form("KNOWN retry clip", fields),
      }));
    const keyed = await ok(post({ text: "hum" }));
    const again = await post({ text: "hum" });
    assertEquals(again.headers.get("idempotent-replayed"), "true", await again.clone().text());
    assertEquals(await ok(again), keyed);
    await problem(post({ text: "hum " }), 422);
  },
);

it(
  "a NUL byte in the text is a 400 naming text before any provider is paid; no database internals",
  async ({ env, newUser, resolveText, resolveAudio, providerCalls }) => {
    const u = await newUser();
    const calls = providerCalls();
    for (
      const res of [
        resolveText(u.token, { text: "neon rain\u0000 keeps falling" }),
        resolveAudio(u.token, "KNOWN clip", { text: "a\u0000b" }),
      ]
    ) {
      const { body } = await problem(res, 400, "invalid_parameter");
      assertEquals(body.invalid_params?.[0]?.name, "text", JSON.stringify(body));
      assert(!/UTF8|byte sequence|0x00|postgres/i.test(JSON.stringify(body)), body.detail);
    }
    assertEquals(providerCalls(), calls);
    const [{ count }] = await env.db.sql`
      select count(*)::int from recall_messages where user_id = ${u.id}`;
    assertEquals(count, 0);
  },
);

it(
  "50 users resolving the same text at once: one call at each provider, 50 threads",
  async ({ env, newUser, resolveText, providerCalls }) => {
    const users = await Promise.all(Array.from({ length: 50 }, () => newUser()));
    const text = freshText("trending tune");
    const before = providerCalls();
    const answers = await Promise.all(users.map((u) => ok(resolveText(u.token, { text }))));
    const after = providerCalls();
    assertEquals(after.intent - before.intent, 1);
    assertEquals(after.candidates - before.candidates, 1);
    assertEquals(new Set(answers.map((a) => a.thread_id)).size, 50);
    for (const a of answers) assertEquals(a.candidates, answers[0].candidates);
    const owners = await env.db.sql`
      select distinct user_id from recall_threads
      where id = any(${answers.map((a) => a.thread_id)}::uuid[])`;
    assertEquals(owners.length, 50);
    // Minutes later (within the answer TTL) the same text costs no provider call at all.
    const late = await newUser();
    await ok(resolveText(late.token, { text: `  ${text.toUpperCase()}!` }));
    assertEquals(providerCalls(), after);
  },
);

it(
  "another user's thread, or an unknown one, is a 404 and costs nothing",
  async ({ env, newUser, resolveText, providerCalls }) => {
    const owner = await newUser();
    const mine = await ok(resolveText(owner.token, { text: freshText() }));
    const intruder = await newUser();
    const calls = providerCalls();
    const { body } = await problem(
      resolveText(intruder.token, { thread_id: mine.thread_id, text: freshText() }),
      404,
      "not_found",
    );
    assertEquals(body.detail, "thread not found");
    await problem(
      resolveText(intruder.token, {
        thread_id: "00000000-0000-4000-8000-00000000beef",
        text: freshText(),
      }),
      404,
      "not_found",
    );
    assertEquals(providerCalls(), calls);
    await env.db.sql`update recall_threads set status = 'deleted' where id = ${mine.thread_id}`;
    await problem(
      resolveText(owner.token, { thread_id: mine.thread_id, text: freshText() }),
      404,
      "not_found",
    );
  },
);

it(
  "bad input is a 4xx problem naming what is wrong",
  async ({ app, newUser, resolveText, resolveAudio }) => {
    // Bad requests count against the rate limit too: a fresh user every few.
    let u = await newUser();
    let sent = 0;
    const bad = async (res: Promise<Response>, status: number, name?: string) => {
      const { body } = await problem(res, status);
      if (name) assertEquals(body.invalid_params?.[0]?.name, name, JSON.stringify(body));
      if (++sent % 5 === 0) u = await newUser();
    };
    await bad(resolveText(u.token, {}), 400, "text");
    await bad(resolveText(u.token, { text: "" }), 400, "text");
    await bad(resolveText(u.token, { text: "   " }), 400, "text");
    await bad(resolveText(u.token, { text: "x".repeat(2001) }), 400, "text");
    await bad(resolveText(u.token, { text: 42 }), 400, "text");
    await bad(resolveText(u.token, { text: "ok", thread_id: "nope" }), 400, "thread_id");
    await bad(resolveText(u.token, "{not json"), 400);
    await bad(resolveText(u.token, "[1,2]"), 400);
    await bad(resolveText(u.token, { text: "ok" }, { "content-type": "text/plain" }), 415);
    await bad(
      Promise.resolve(app.request("/recall-resolve", {
        method: "POST",
        headers: { authorization: `Bearer ${u.token}` },
        body: new Uint8Array([1, 2, 3]),
      })),
      415,
    );
    await bad(resolveText(u.token, { text: "ok" }, { "idempotency-key": "x".repeat(300) }), 400);
    await bad(resolveText(null, { text: "ok" }), 401);
    // Multipart: no audio and no text; empty audio; unsupported type; audio not a file.
    await bad(
      Promise.resolve(app.request("/recall-resolve", {
        method: "POST",
        headers: { authorization: `Bearer ${u.token}` },
        body: (() => {
          const f = new FormData();
          f.set("thread_id", "");
          return f;
        })(),
      })),
      400,
    );
    await bad(resolveAudio(u.token, new Uint8Array()), 400, "audio");
    await bad(resolveAudio(u.token, "fLaC data", {}, "audio/flac"), 415);
    await bad(resolveAudio(u.token, "text", {}, "text/plain"), 415);
    await bad(resolveAudio(u.token, "RIFF", { text: "y".repeat(2001) }), 400, "text");
    await bad(
      Promise.resolve(app.request("/recall-resolve", {
        method: "POST",
        headers: {
          authorization: `Bearer ${u.token}`,
          "content-type": "multipart/form-data; boundary=xyz",
        },
        body: "--xyz\r\ngarbage",
      })),
      400,
    );
  },
);

it(
  "validation answers as before the checks moved into the schemas: which 400 wins, its detail, the documented form",
  async ({ app, newUser, providerCalls }) => {
    let u = await newUser();
    let sent = 0;
    const badKey = { "idempotency-key": "x".repeat(300) };
    /** A POST with `headers` (no Content-Type: a FormData body sets its own). */
    const post = async (headers: Record<string, string>, body?: BodyInit) => {
      if (++sent % 5 === 0) u = await newUser(); // 10 resolves a minute each
      return app.request("/recall-resolve", {
        method: "POST",
        headers: { authorization: `Bearer ${u.token}`, ...headers },
        body,
      });
    };
    const json = (body: string, headers: Record<string, string> = {}) =>
      post({ "content-type": "application/json", ...headers }, body);
    const fields = (entries: [string, string | File][], headers: Record<string, string> = {}) => {
      const f = new FormData();
      for (const [k, v] of entries) f.append(k, v);
      return post(headers, f);
    };
    const audio = (type: string) =>
      new File([new TextEncoder().encode("fLaC clip")], "clip", { type });
    const invalid = async (res: Promise<Response>, params: [string, string][], detail?: string) => {
      const { body } = await problem(res, 400, "invalid_parameter");
      assertEquals(
        body.invalid_params.map((p: { name: string; reason: string }) => [p.name, p.reason]),
        params,
      );
      if (detail) assertEquals(body.detail, detail);
    };
    const keyReason = "must be 1–255 visible ASCII characters";
    const calls = providerCalls();

    // (a) Neither text nor audio: "send text or audio", in JSON and in a form, once every
    // field is valid (a bad field is named alone first).
    const neither: [string, string][] = [["text", "text or audio is required"]];
    await invalid(json("{}"), neither, "send text or audio");
    await invalid(fields([]), neither, "send text or audio");
    await invalid(fields([["thread_id", "00000000-0000-4000-8000-00000000beef"]]), neither);
    await invalid(json(`{"thread_id":"nope"}`), [["thread_id", "must be a uuid"]]);
    await invalid(fields([["thread_id", "nope"]]), [["thread_id", "must be a uuid"]]);

    // (b) A multipart body that cannot be parsed: our detail, never the parser's.
    for (
      const res of [
        post({ "content-type": "multipart/form-data" }, "garbage"), // no boundary
        post({ "content-type": "multipart/form-data" }, ""),
        post({ "content-type": "multipart/form-data; boundary=xyz" }), // no body
      ]
    ) {
      const { body } = await problem(res, 400, "malformed_body");
      assertEquals(body.detail, "the multipart body cannot be parsed");
    }

    // (c) A bad Idempotency-Key and a bad JSON body: the body's 400 wins; the key comes
    // before "send text or audio". In a form, the key comes before the body is parsed.
    const { body: malformed } = await problem(json("{not json", badKey), 400, "malformed_body");
    assertEquals(malformed.detail, "Malformed JSON in request body");
    await invalid(json(`{"text":42}`, badKey), [[
      "text",
      "Invalid input: expected string, received number",
    ]]);
    await invalid(json(`{"thread_id":"nope"}`, badKey), [["thread_id", "must be a uuid"]]);
    await invalid(json(`{"text":"ok"}`, badKey), [["Idempotency-Key", keyReason]]);
    await invalid(json("{}", badKey), [["Idempotency-Key", keyReason]]);
    await invalid(fields([["thread_id", "nope"]], badKey), [["Idempotency-Key", keyReason]]);
    await invalid(
      post({ "content-type": "multipart/form-data", ...badKey }, "garbage"),
      [["Idempotency-Key", keyReason]],
    );
    await problem(json(`{"text":"ok"}`, { "content-type": "text/plain", ...badKey }), 415);

    // (d) An unsupported audio type is a 415, with valid fields around it or a bad one
    // after it in order; as before, a bad key or text field is answered first (a 400 naming
    // it alone, never one mentioning the audio).
    const flac = `audio type "audio/flac" is not supported; send webm, mp4/m4a, mpeg, wav or ogg`;
    for (
      const res of [
        fields([["audio", audio("audio/flac")]]),
        fields([["audio", audio("audio/flac")], ["text", "hum"], [
          "thread_id",
          "00000000-0000-4000-8000-00000000beef",
        ]]),
      ]
    ) {
      const { body } = await problem(res, 415, "unsupported_media_type");
      assertEquals(body.detail, flac);
    }
    await invalid(fields([["audio", audio("audio/flac")]], badKey), [[
      "Idempotency-Key",
      keyReason,
    ]]);
    await invalid(
      fields([["thread_id", "nope"], ["audio", audio("audio/flac")]]),
      [["thread_id", "must be a uuid"]],
      "thread_id: must be a uuid",
    );
    await invalid(
      fields([["text", "y".repeat(2001)], ["audio", audio("audio/flac")]]),
      [["text", "must be at most 2000 characters"]],
    );

    assertEquals(providerCalls(), calls);

    // (e) The documented form: audio (required), thread_id, text.
    const doc = await (await app.request("/recall-resolve/openapi.json")).json();
    const multipart = doc.paths["/recall-resolve"].post.requestBody.content["multipart/form-data"];
    assertEquals(multipart.schema.required, ["audio"]);
    assertEquals(multipart.schema.properties, {
      audio: { type: "string", format: "binary", description: "≤ 8 MB" },
      thread_id: { type: "string", format: "uuid" },
      text: { type: "string", maxLength: 2000 },
    });
  },
);

it(
  "audio over 8 MB is a 413 before it is read whole",
  async ({ app, newUser, resolveAudio, providerCalls }) => {
    const u = await newUser();
    // A declared length: refused without reading the body at all.
    let pulled = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled++;
        controller.enqueue(new Uint8Array(64 * 1024));
        if (pulled > 200) controller.close();
      },
    });
    const declared = await app.request("/recall-resolve", {
      method: "POST",
      headers: {
        authorization: `Bearer ${u.token}`,
        "content-type": "multipart/form-data; boundary=xyz",
        "content-length": String(9 * 1024 * 1024),
      },
      body: stream,
    });
    await problem(declared, 413, "payload_too_large");
    assert(pulled <= 2, `read ${pulled} chunks of a body declared too large`);
    // No declared length: counted while streaming, stopped at the limit.
    await problem(
      resolveAudio(u.token, new Uint8Array(8 * 1024 * 1024 + 1)),
      413,
      "payload_too_large",
    );
    const calls = providerCalls();
    assertEquals(providerCalls(), calls);
  },
);

it(
  "the 11th resolve in a minute is a 429 with Retry-After and RateLimit headers",
  async ({ newUser, resolveText }) => {
    const u = await newUser();
    const text = freshText("rate limited");
    for (let i = 0; i < 10; i++) await ok(resolveText(u.token, { text }));
    const { res, body } = await problem(resolveText(u.token, { text }), 429, "rate_limited");
    assert(Number(res.headers.get("retry-after")) >= 1);
    assertMatch(res.headers.get("ratelimit-policy") ?? "", /"recall-60s";q=10;w=60/);
    assertMatch(res.headers.get("ratelimit-policy") ?? "", /"recall-3600s";q=100;w=3600/);
    assertMatch(res.headers.get("ratelimit") ?? "", /"recall-60s";r=0/);
    assertEquals(body.policy, "recall");
  },
);

it(
  "a failing provider opens its breaker after 5 failures, stops receiving calls, answers stay 200; half-open probe closes it",
  async ({ shazam, song, newUser, resolveAudio }) => {
    advanceClock(61_000); // a fresh breaker window: earlier tests' calls no longer count
    const u = await newUser();
    shazam.behave({ status: 500 }, "/songs");
    const before = shazam.detectCalls();
    for (let i = 1; i <= 5; i++) {
      const a = await ok(resolveAudio(u.token, `RIFF KNOWN breaker ${i}`));
      assertEquals(a.providers.shazam, "error");
      assertEquals(a.providers.acrcloud, "ok");
      assertEquals(a.degraded, true);
      assertEquals(a.candidates[0].song_id, song.id); // ACRCloud still answers
    }
    assertEquals(shazam.detectCalls() - before, 5);
    for (let i = 6; i <= 7; i++) {
      const a = await ok(resolveAudio(u.token, `RIFF KNOWN breaker ${i}`));
      assertEquals(a.providers.shazam, "circuit_open");
      assertEquals(a.degraded, true);
    }
    assertEquals(shazam.detectCalls() - before, 5, "calls reached an open circuit");

    // After the open period one probe goes through; its success closes the breaker.
    shazam.behave({}, "/songs");
    advanceClock(61_000);
    const probe = await ok(resolveAudio(u.token, "RIFF KNOWN breaker 8"));
    assertEquals(probe.providers.shazam, "ok");
    assertEquals(probe.degraded, false);
    const closed = await ok(resolveAudio(u.token, "RIFF KNOWN breaker 9"));
    assertEquals(closed.providers.shazam, "ok");
    assertEquals(shazam.detectCalls() - before, 7);
  },
);

it(
  "the 6th concurrent resolve is a 429; slots are released after successes, errors and timeouts",
  async ({ env, acr, shazam, newUser, resolveText, resolveAudio }) => {
    advanceClock(61_000);
    const u = await newUser();
    const slots = `${env.redisPrefix}lease:recall-concurrency:${u.id}`;
    const redis = env.deps.redis;
    const gate = latch();
    const fiveIn = latch();
    shazamGate = gate.promise;
    shazamArrivals = 0;
    onShazamArrival = (n) => n === 5 && fiveIn.resolve();
    const held = Array.from({ length: 5 }, (_, i) => resolveAudio(u.token, `GATE held ${i}`));
    await fiveIn.promise;
    assertEquals(await redis.zcard(slots), 5);
    const { res, body } = await problem(resolveText(u.token, { text: freshText() }), 429);
    assertEquals(body.policy, "recall-concurrency");
    assert(Number(res.headers.get("retry-after")) >= 1);
    gate.resolve();
    for (const r of held) await ok(r);
    shazamGate = null;
    assertEquals(await redis.zcard(slots), 0);

    // Providers timing out (ACRCloud hangs) and failing (Shazam 503): slots come back.
    // Slower than the 1.5 s timeout (a delay rather than a hang, so the fake can shut down).
    acr.behave({ delayMs: 4000 }, "/v1/identify");
    shazam.behave({ status: 503 }, "/songs");
    const failed = await Promise.all(
      Array.from({ length: 3 }, (_, i) => ok(resolveAudio(u.token, `RIFF fail ${i}`))),
    );
    for (const a of failed) {
      assertEquals([a.providers.acrcloud, a.providers.shazam], ["timeout", "error"]);
    }
    acr.behave({}, "/v1/identify");
    shazam.behave({}, "/songs");
    assertEquals(await redis.zcard(slots), 0);
    await ok(resolveAudio(u.token, "RIFF KNOWN recovered")); // resets consecutive failures
  },
);

it(
  "the large model ending at its timeout: 200, degraded, 'timeout', nothing 5xx",
  async ({ openai, newUser, resolveText }) => {
    advanceClock(61_000);
    const u = await newUser();
    // Far slower than the timeouts (400 ms intent, 1.5 s candidates).
    openai.behave({ delayMs: 5000 }, "/v1/chat/completions");
    const started = performance.now();
    const answer = await ok(resolveText(u.token, { text: freshText("slow model") }));
    const ms = performance.now() - started;
    openai.behave({}, "/v1/chat/completions");
    assertEquals(answer.providers.candidates, "timeout");
    assertEquals(answer.providers.intent, "timeout");
    assertEquals(answer.degraded, true);
    assert(ms >= 1500 && ms < 6000, `answered after ${ms} ms`);
    // A degraded answer is not kept: the same text asks the providers again.
    const again = await ok(resolveText(u.token, { text: `slow model number ${textSeq}` }));
    assertEquals(again.degraded, false);
  },
);
