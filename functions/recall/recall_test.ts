import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { dbStatements, suite } from "../../scripts/testing/test_http.ts";
import { settleBackground } from "../../shared/http/background.ts";
import { createApp as createResolveApp } from "../recall-resolve/app.ts";
import { createApp } from "./app.ts";

/** Both recall apps on one database and Redis; no provider keys at all (the embedded default). */
async function setup() {
  const env = await functionTestEnv({ env: { RATE_LIMIT_DECISION_MS: "2000" } });
  await seed(env.db.sql, { users: 12, posts: 0, follows: 0, likes: 0, songs: 200, seed: 5 });
  const [song] = await env.db.sql`
    insert into songs (title, artist, year, lyrics_excerpt)
    values ('Cobalt Carousel', 'Nell Harlow', 2011, 'spinning slow under cobalt lights')
    returning id`;
  const users: string[] = (await env.db.sql`select id from profiles order by username`).map((r) =>
    r.id
  );
  const [alice, bob, carol] = users;
  const tokens = new Map<string, string>();
  for (const id of users) tokens.set(id, await env.keys.mint(id));
  const app = createApp(env.deps);
  const resolveApp = createResolveApp(env.deps);

  function get(path: string, user: string | null = alice) {
    return app.request(`/recall${path}`, {
      headers: user ? { authorization: `Bearer ${tokens.get(user)}` } : {},
    });
  }

  async function resolve(user: string, body: Record<string, unknown>) {
    const res = await resolveApp.request("/recall-resolve", {
      method: "POST",
      headers: { authorization: `Bearer ${tokens.get(user)}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    assertEquals(res.status, 200, await res.clone().text());
    return await res.json();
  }

  /** `count` threads for `user` via the batch RPC (as the user), many sharing last_message_at. */
  async function makeThreads(user: string, count: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const [row] = await env.db.sql.begin(async (tx) => {
        await tx`select set_config('role', 'authenticated', true),
          set_config('request.jwt.claims', ${
          JSON.stringify({ sub: user, role: "authenticated" })
        }, true)`;
        return await tx`select thread_id from insert_recall_messages_batch(
          null, ${"thread " + i}, 'text', 'q', 'candidates', 'a', '{}'::jsonb)`;
      });
      ids.push(row.thread_id);
    }
    // Ties: a third of them at one instant.
    await env.db.sql`update recall_threads set last_message_at = '2026-11-20 10:00:00.123456+00'
      where id = any(${ids.filter((_, i) => i % 3 === 0)}::uuid[])`;
    return ids;
  }

  async function walk<T extends { id: string }>(path: string, user = alice): Promise<T[][]> {
    const pages: T[][] = [];
    let cursor: string | null = null;
    for (let n = 0; n < 100; n++) {
      const sep = path.includes("?") ? "&" : "?";
      const res = await get(`${path}${cursor ? `${sep}cursor=${cursor}` : ""}`, user);
      assertEquals(res.status, 200, await res.clone().text());
      const page = await res.json();
      pages.push(page.items);
      cursor = page.next_cursor;
      if (!cursor) return pages;
    }
    throw new Error("too many pages");
  }

  const close = async () => {
    await settleBackground();
    await env.close();
  };
  return {
    env,
    app,
    resolveApp,
    song,
    users,
    alice,
    bob,
    carol,
    tokens,
    get,
    resolve,
    makeThreads,
    walk,
    close,
  };
}

const it = suite("recall", setup);

it(
  "with no provider keys the catalog alone answers (not degraded)",
  async ({ resolveApp, song, carol, tokens, resolve }) => {
    const answer = await resolve(carol, { text: "cobalt carousel" });
    assertEquals(answer.providers, {
      catalog: "ok",
      intent: "not_configured",
    });
    assertEquals(answer.degraded, false);
    assertEquals(answer.candidates[0].song_id, song.id);
    assertEquals(answer.candidates[0].sources, ["catalog"]);
    // Not conclusive and no model: the large-model step says why it did not answer.
    const vague = await resolve(carol, { text: "spinning slow lights" });
    assertEquals(vague.providers, {
      catalog: "ok",
      intent: "not_configured",
      candidates: "not_configured",
    });
    assertEquals(vague.candidates[0].song_id, song.id);
    // Audio with no keys: every audio provider says not_configured, still a 200.
    const form = new FormData();
    form.set("audio", new File([new Uint8Array([1, 2, 3])], "a.wav", { type: "audio/wav" }));
    const res = await resolveApp.request("/recall-resolve", {
      method: "POST",
      headers: { authorization: `Bearer ${tokens.get(carol)}` },
      body: form,
    });
    assertEquals(res.status, 200);
    const audio = await res.json();
    assertEquals(audio.providers, {
      acrcloud: "not_configured",
      shazam: "not_configured",
      transcription: "not_configured",
    });
    assertEquals(audio.candidates, []);
  },
);

it(
  "threads: 20 a page, most recently active first, each exactly once (ties included)",
  async ({ alice, bob, get, makeThreads, walk }) => {
    const ids = await makeThreads(alice, 45);
    await makeThreads(bob, 3);
    const pages = await walk<{ id: string; last_message_at: string }>("/threads");
    assertEquals(pages.map((p) => p.length), [20, 20, 5]);
    const items = pages.flat();
    assertEquals(new Set(items.map((t) => t.id)), new Set(ids));
    for (let i = 1; i < items.length; i++) {
      assert(items[i - 1].last_message_at >= items[i].last_message_at, "not newest first");
    }
    const clamped = await (await get("/threads?limit=500")).json();
    assertEquals(clamped.items.length, 20);
    const small = await (await get("/threads?limit=7")).json();
    assertEquals(small.items.length, 7);
  },
);

it(
  "messages: 50 a page, newest first, keyset over ties",
  async ({ env, bob, makeThreads, walk }) => {
    const [thread] = await makeThreads(bob, 1);
    await env.db.sql`
      insert into recall_messages (thread_id, user_id, role, type, content, created_at)
      select ${thread}, ${bob}, case when g % 2 = 0 then 'user' else 'assistant' end, 'text',
        'm' || g, '2026-11-21 08:00:00+00'::timestamptz + ((g / 4) || ' seconds')::interval
      from generate_series(1, 118) g`;
    const pages = await walk<{ id: string; created_at: string }>(
      `/threads/${thread}/messages`,
      bob,
    );
    assertEquals(pages.map((p) => p.length), [50, 50, 20]);
    const items = pages.flat();
    assertEquals(new Set(items.map((m) => m.id)).size, 120);
    for (let i = 1; i < items.length; i++) {
      assert(items[i - 1].created_at >= items[i].created_at, "not newest first");
    }
  },
);

it(
  "only the owner: another user's thread is a 404 everywhere (and RLS agrees)",
  async ({ env, app, alice, bob, tokens, get, makeThreads }) => {
    const [thread] = await makeThreads(alice, 1);
    assertEquals((await get(`/threads/${thread}`)).status, 200);
    for (const path of [`/threads/${thread}`, `/threads/${thread}/messages`]) {
      const res = await get(path, bob);
      assertEquals(res.status, 404);
      assertEquals((await res.json()).code, "not_found");
    }
    const del = await app.request(`/recall/threads/${thread}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${tokens.get(bob)}` },
    });
    assertEquals(del.status, 404);
    const asBob = <T>(work: (tx: typeof env.db.sql) => Promise<T>) =>
      env.db.sql.begin(async (tx) => {
        await tx`select set_config('role', 'authenticated', true),
          set_config('request.jwt.claims', ${
          JSON.stringify({ sub: bob, role: "authenticated" })
        }, true)`;
        return await work(tx as unknown as typeof env.db.sql);
      });
    const seen = await asBob(async (tx) => ({
      threads: await tx`select id from recall_threads where id = ${thread}`,
      messages: await tx`select id from recall_messages where thread_id = ${thread}`,
    }));
    assertEquals(seen.threads.length, 0);
    assertEquals(seen.messages.length, 0);
    for (const owner of [bob, alice]) {
      const forged = await asBob((tx) =>
        tx`insert into recall_messages (thread_id, user_id, role, type)
          values (${thread}, ${owner}, 'user', 'text')`
      ).catch((e) => e);
      assert(forged instanceof Error, "wrote into another user's thread");
    }
    const none = await asBob((tx) =>
      tx`select * from insert_recall_messages_batch(${thread}, 't', 'text', 'q', 'error', 'a', null)`
    );
    assertEquals(none.length, 0);
    const [{ status }] = await env.db.sql`select status from recall_threads where id = ${thread}`;
    assertEquals(status, "active");
  },
);

it(
  "soft delete: 204, then gone from the list, the thread and its messages",
  async ({ env, app, alice, tokens, get, makeThreads, walk }) => {
    const [thread] = await makeThreads(alice, 1);
    const del = () =>
      app.request(`/recall/threads/${thread}`, {
        method: "DELETE",
        headers: { authorization: `Bearer ${tokens.get(alice)}` },
      });
    assertEquals((await get(`/threads/${thread}`)).status, 200); // cached now
    assertEquals((await del()).status, 204);
    assertEquals((await get(`/threads/${thread}`)).status, 404);
    assertEquals((await get(`/threads/${thread}/messages`)).status, 404);
    const listed = (await walk<{ id: string }>("/threads")).flat();
    assert(!listed.some((t) => t.id === thread));
    assertEquals((await del()).status, 404);
    const [{ status }] = await env.db.sql`select status from recall_threads where id = ${thread}`;
    assertEquals(status, "deleted");
  },
);

it(
  "a thread deleted by its uppercase id is gone at once, also from the cached reads",
  async ({ app, alice, tokens, get, makeThreads }) => {
    const [thread] = await makeThreads(alice, 1);
    assertEquals((await get(`/threads/${thread}`)).status, 200); // cached now
    assertEquals((await get(`/threads/${thread}/messages`)).status, 200);
    const upper = await get(`/threads/${thread.toUpperCase()}`);
    assertEquals((await upper.json()).id, thread);
    const del = await app.request(`/recall/threads/${thread.toUpperCase()}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${tokens.get(alice)}` },
    });
    assertEquals(del.status, 204);
    assertEquals((await get(`/threads/${thread}`)).status, 404);
    assertEquals((await get(`/threads/${thread}/messages`)).status, 404);
    assertEquals((await get(`/threads/${thread.toUpperCase()}/messages`)).status, 404);
  },
);

it(
  "reads are cached; a resolve invalidates the thread list and the thread's messages at once",
  async ({ users, get, resolve }) => {
    const user = users[3];
    const first = await resolve(user, { text: "cobalt carousel nell harlow" });
    const list1 = await get("/threads", user);
    assertEquals(dbStatements(list1), 1);
    const cachedList = await get("/threads", user);
    assertEquals(dbStatements(cachedList), 0);
    assertEquals((await cachedList.json()).items.length, 1);
    const msgs1 = await get(`/threads/${first.thread_id}/messages`, user);
    assertEquals((await msgs1.json()).items.length, 2);
    assertEquals(dbStatements(await get(`/threads/${first.thread_id}/messages`, user)), 0);

    await resolve(user, { text: "another one", thread_id: first.thread_id });
    const msgs2 = await get(`/threads/${first.thread_id}/messages`, user);
    assertEquals(dbStatements(msgs2), 1);
    const page = await msgs2.json();
    assertEquals(page.items.length, 4);
    assertEquals(page.items.map((m: { role: string }) => m.role), [
      "assistant",
      "user",
      "assistant",
      "user",
    ]);
    assertEquals(page.items[0].candidate_json.providers.catalog !== undefined, true);

    const second = await resolve(user, { text: "a new question" });
    const list2 = await (await get("/threads", user)).json();
    assertEquals(list2.items.map((t: { id: string }) => t.id), [second.thread_id, first.thread_id]);
  },
);

it(
  "bad input: 400 for malformed ids and cursors, 401 without a token, 404/405 problems",
  async ({ app, alice, tokens, get, makeThreads }) => {
    const [thread] = await makeThreads(alice, 1);
    const cases: [string, number, string | null][] = [
      ["/threads/not-a-uuid", 400, alice],
      ["/threads/not-a-uuid/messages", 400, alice],
      ["/threads?cursor=garbage!", 400, alice],
      ["/threads?limit=0", 400, alice],
      ["/threads?limit=abc", 400, alice],
      [`/threads/${thread}/messages?cursor=bm9wZQ`, 400, alice],
      ["/threads/00000000-0000-4000-8000-000000000000", 404, alice],
      ["/threads", 401, null],
      ["/nowhere", 404, alice],
    ];
    for (const [path, status, user] of cases) {
      const res = await get(path, user);
      assertEquals(res.status, status, path);
      assertEquals(res.headers.get("content-type"), "application/problem+json", path);
    }
    // A threads cursor is not a messages cursor.
    const listed = await (await get("/threads?limit=1")).json();
    assert(listed.next_cursor);
    assertEquals(
      (await get(`/threads/${thread}/messages?cursor=${listed.next_cursor}`)).status,
      400,
    );
    const post = await app.request("/recall/threads", {
      method: "POST",
      headers: { authorization: `Bearer ${tokens.get(alice)}` },
    });
    assertEquals(post.status, 405);
  },
);
