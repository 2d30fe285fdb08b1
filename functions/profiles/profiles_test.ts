import { assert, assertEquals, assertMatch } from "../../scripts/testing/assert.ts";
import { DEMO_USER_ID, seed } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { assertProblem, dbStatements, suite } from "../../scripts/testing/test_http.ts";
import { settleBackground } from "../../shared/http/background.ts";
import { createApp } from "./app.ts";

// These tests fire up to 100 concurrent requests, some from one user, to prove counters and
// coalescing; admission (per-user caps, the adaptive limit) is proved in shared/http/app_test.ts.
const admissionOff = { MIN_IN_FLIGHT: "512", MAX_IN_FLIGHT: "512", USER_MAX_IN_FLIGHT: "512" };

interface Profile {
  id: string;
  username: string;
  display_name: string | null;
  follower_count: number;
  following_count: number;
}

const it = suite("profiles", async () => {
  const env = await functionTestEnv({
    env: { PROFILE_SEARCH_RATE_LIMIT_PER_MIN: "60", ...admissionOff },
  });
  await seed(env.db.sql, { users: 160, posts: 100, seed: 11 });
  const app = createApp(env.deps);
  const demoToken = await env.keys.mint(DEMO_USER_ID);
  const userIds: string[] = (await env.db.sql`select id from profiles order by username`).map((
    r,
  ) => r.id);

  async function call(
    path: string,
    init: RequestInit & { token?: string | null } = {},
  ): Promise<Response> {
    const token = init.token === undefined ? demoToken : init.token;
    const headers = new Headers(init.headers);
    if (token) headers.set("authorization", `Bearer ${token}`);
    return await app.request(`/profiles${path}`, { ...init, headers });
  }

  function patchMe(body: unknown, token = demoToken) {
    return call("/me", {
      method: "PATCH",
      token,
      headers: { "content-type": "application/json" },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
  }

  /** The profiles app served by a second process: another isolate with its own local tier. */
  async function startSecondInstance() {
    const code = `
      import { createDeps } from ${JSON.stringify(import.meta.resolve("../../shared/deps.ts"))};
      import { createApp } from ${JSON.stringify(import.meta.resolve("./app.ts"))};
      const app = createApp(createDeps(Deno.env.toObject()));
      const onListen = ({ port }) => console.log("PORT " + port);
      Deno.serve({ hostname: "127.0.0.1", port: 0, onListen }, app.fetch);`;
    // This test's database, Redis prefix and keys: they are not in our process environment.
    const childEnv = Object.fromEntries(
      Object.entries(env.env).filter((e): e is [string, string] => e[1] !== undefined),
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      cwd: new URL("../..", import.meta.url).pathname,
      env: childEnv,
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!/PORT \d+/.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`second instance exited: ${text}`);
      text += value;
    }
    const port = Number(text.match(/PORT (\d+)/)![1]);
    return {
      fetch: (path: string, init: RequestInit = {}) =>
        fetch(`http://127.0.0.1:${port}/profiles${path}`, {
          ...init,
          headers: { authorization: `Bearer ${demoToken}`, ...init.headers },
        }),
      async close() {
        child.kill("SIGTERM");
        await child.status;
        await reader.cancel().catch(() => {});
      },
    };
  }

  async function walk(path: string, limit: number) {
    const ids: string[] = [];
    let cursor: string | null = null;
    for (let pages = 0; pages < 500; pages++) {
      const res = await call(`${path}?limit=${limit}${cursor ? `&cursor=${cursor}` : ""}`);
      assertEquals(res.status, 200, await res.clone().text());
      const page = await res.json();
      ids.push(...page.items.map((i: { id: string }) => i.id));
      cursor = page.next_cursor;
      if (!cursor) return ids;
    }
    throw new Error("too many pages");
  }

  return {
    env,
    call,
    patchMe,
    walk,
    startSecondInstance,
    userIds,
    async close() {
      // The second invalidations of edits (profile_cache.ts) still run against this Redis.
      await settleBackground();
      await env.close();
    },
  };
});

it("one profile, with exact follow counts; unknown → 404, malformed id → 400", async ({ env, call }) => {
  const res = await call(`/${DEMO_USER_ID}`);
  assertEquals(res.status, 200);
  const profile: Profile = await res.json();
  const [counts] = await env.db.sql`select
    (select count(*)::int from follows where followee_id = ${DEMO_USER_ID}) as followers,
    (select count(*)::int from follows where follower_id = ${DEMO_USER_ID}) as following`;
  assertEquals(profile.username, "demo");
  assertEquals(profile.follower_count, counts.followers);
  assertEquals(profile.following_count, counts.following);
  await assertProblem(await call(`/${crypto.randomUUID()}`), 404);
  await assertProblem(await call("/not-a-uuid"), 400, "id");
  await assertProblem(await call(`/${DEMO_USER_ID}`, { token: null }), 401);
});

it("100 ids: one statement for the misses, none when cached, request order, unknown left out", async ({ call, userIds }) => {
  const unknown = crypto.randomUUID();
  const ids = [...userIds.slice(20, 119).reverse(), unknown];
  const cold = await call(`?ids=${ids.join(",")}`);
  assertEquals(cold.status, 200);
  assertEquals(dbStatements(cold), 1);
  const { items } = await cold.json() as { items: Profile[] };
  assertEquals(items.map((p) => p.id), ids.slice(0, 99));
  const warm = await call(`?ids=${ids.join(",")}`);
  assertEquals(dbStatements(warm), 1); // only the unknown id (misses are never cached)
  const cachedOnly = await call(`?ids=${ids.slice(0, 99).join(",")}`);
  assertEquals(dbStatements(cachedOnly), 0);
  assertEquals((await cachedOnly.json()).items.length, 99);
});

it("bad id lists: over 100, malformed, empty → 400 naming ids", async ({ call }) => {
  const many = Array.from({ length: 101 }, () => crypto.randomUUID()).join(",");
  await assertProblem(await call(`?ids=${many}`), 400, "ids");
  await assertProblem(await call(`?ids=${DEMO_USER_ID},nope`), 400, "ids");
  await assertProblem(await call("?ids="), 400, "ids");
  await assertProblem(await call(""), 400, "ids");
});

it("PATCH /me validates, and a taken username is its own 409", async ({ env, patchMe }) => {
  await assertProblem(await patchMe({}), 400);
  await assertProblem(await patchMe("{not json"), 400);
  await assertProblem(await patchMe({ username: "Bad Name!" }), 400, "username");
  await assertProblem(await patchMe({ avatar_url: "javascript:alert(1)" }), 400, "avatar_url");
  await assertProblem(await patchMe({ bio: "x".repeat(501) }), 400, "bio");
  await assertProblem(await patchMe({ role: "admin" }), 400);
  await assertProblem(await patchMe({ bio: "x".repeat(2_000_000) }), 413);
  const [other] = await env.db
    .sql`select username from profiles where id <> ${DEMO_USER_ID} limit 1`;
  const taken = await patchMe({ username: other.username });
  await assertProblem(taken, 409, "username");
  const ok = await patchMe({ bio: "hello", avatar_url: "https://cdn.example.com/a.png" });
  assertEquals(ok.status, 200);
  assertEquals((await ok.json()).bio, "hello");
});

it("an edit is visible to the next read through another instance (both directions)", async ({ call, patchMe, startSecondInstance }) => {
  const other = await startSecondInstance();
  try {
    const read = async (via: "here" | "there") => {
      const res = via === "here"
        ? await call(`/${DEMO_USER_ID}`)
        : await other.fetch(`/${DEMO_USER_ID}`);
      assertEquals(res.status, 200);
      return (await res.json()).display_name as string;
    };
    await patchMe({ display_name: "Before" });
    assertEquals(await read("there"), "Before");
    assertEquals(await read("there"), "Before"); // now in that instance's local tier
    assertEquals(await read("here"), "Before");
    await patchMe({ display_name: "After here" });
    assertEquals(await read("there"), "After here");
    const res = await other.fetch("/me", {
      method: "PATCH",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ display_name: "After there" }),
    });
    assertEquals(res.status, 200);
    assertEquals(await read("here"), "After there");
    const batch = await (await call(`?ids=${DEMO_USER_ID}`)).json();
    assertEquals(batch.items[0].display_name, "After there");
  } finally {
    await other.close();
  }
});

it("follow/unfollow are idempotent and invalidate both profiles", async ({ call, userIds }) => {
  const target = userIds[150];
  const before: Profile = await (await call(`/${target}`)).json();
  const me: Profile = await (await call(`/${DEMO_USER_ID}`)).json();
  await call(`/${target}/follow`, { method: "DELETE" });
  const base: Profile = await (await call(`/${target}`)).json();
  const first = await call(`/${target}/follow`, { method: "PUT" });
  assertEquals(first.status, 200);
  const again = await (await call(`/${target}/follow`, { method: "PUT" })).json();
  assertEquals(again, { id: target, following: true, follower_count: base.follower_count + 1 });
  const after: Profile = await (await call(`/${target}`)).json();
  assertEquals(after.follower_count, base.follower_count + 1);
  const meAfter: Profile = await (await call(`/${DEMO_USER_ID}`)).json();
  assert(meAfter.following_count >= me.following_count, "own following_count refreshed");
  const gone = await (await call(`/${target}/follow`, { method: "DELETE" })).json();
  assertEquals(gone.follower_count, base.follower_count);
  const twice = await (await call(`/${target}/follow`, { method: "DELETE" })).json();
  assertEquals(twice.follower_count, base.follower_count);
  assert(before.follower_count >= 0);
  await assertProblem(await call(`/${DEMO_USER_ID}/follow`, { method: "PUT" }), 400, "id");
  await assertProblem(await call(`/${crypto.randomUUID()}/follow`, { method: "PUT" }), 404);
});

it("100 concurrent mixed follows/unfollows (some crossing) keep every count exact", async ({ env, call, userIds }) => {
  const target = userIds[3];
  const tokens = new Map<string, string>();
  for (const id of userIds.slice(40, 140)) tokens.set(id, await env.keys.mint(id));
  const targetToken = await env.keys.mint(target);
  const requests: Promise<Response>[] = [];
  userIds.slice(40, 140).forEach((id, i) => {
    const method = i % 3 === 2 ? "DELETE" : "PUT";
    requests.push(call(`/${target}/follow`, { method, token: tokens.get(id)! }));
    // the target follows some of its followers back at the same time (opposite lock order)
    if (i % 4 === 0) requests.push(call(`/${id}/follow`, { method: "PUT", token: targetToken }));
  });
  const responses = await Promise.all(requests);
  for (const res of responses) assertEquals(res.status, 200, await res.text());
  const wrong = await env.db.sql`
    select p.id from profiles p
    where p.follower_count <> (select count(*) from follows f where f.followee_id = p.id)
       or p.following_count <> (select count(*) from follows f where f.follower_id = p.id)`;
  assertEquals(wrong.length, 0);
  const served: Profile = await (await call(`/${target}`)).json();
  const [{ n }] = await env.db
    .sql`select count(*)::int as n from follows where followee_id = ${target}`;
  assertEquals(served.follower_count, n);
});

it("followers and following walk every row once, also when many share created_at", async ({ env, call, walk, userIds }) => {
  const star = userIds[7];
  await env.db.sql`
    insert into follows (follower_id, followee_id, created_at)
    select p.id, ${star}, '2026-11-20 12:00:00.123456+00' from profiles p where p.id <> ${star}
    on conflict do nothing`;
  const followers = await walk(`/${star}/followers`, 7);
  const expected = await env.db.sql`select follower_id from follows where followee_id = ${star}`;
  assertEquals(followers.length, expected.length);
  assertEquals(new Set(followers), new Set(expected.map((r) => r.follower_id)));
  const following = await walk(`/${DEMO_USER_ID}/following`, 3);
  const expected2 = await env.db
    .sql`select followee_id from follows where follower_id = ${DEMO_USER_ID}`;
  assertEquals(following.length, expected2.length);
  assertEquals(new Set(following), new Set(expected2.map((r) => r.followee_id)));
  const page = await (await call(`/${star}/followers?limit=500`)).json();
  assertEquals(page.items.length, 100); // clamped
  await assertProblem(await call(`/${star}/followers?cursor=nope`), 400, "cursor");
  await assertProblem(await call(`/${crypto.randomUUID()}/followers`), 404);
});

it("search: word prefixes, typos, exact username first; limit clamped; 60/min", async ({ env, call }) => {
  const [drummer] = await env.db.sql`
    select id, username, display_name from profiles where display_name like '% Drummer' limit 1`;
  assert(drummer, "seed has a drummer");
  const hits = async (q: string, limit = 20) => {
    const res = await call(`/search?q=${encodeURIComponent(q)}&limit=${limit}`);
    assertEquals(res.status, 200, await res.clone().text());
    return (await res.json()).items as { id: string; display_name: string; username: string }[];
  };
  const adjective = drummer.display_name.split(" ")[0].toLowerCase();
  const prefix = await hits(adjective.slice(0, 4));
  assert(prefix.some((h) => h.id === drummer.id) || prefix.length === 20, "prefix match");
  assert(prefix.every((h) => /./.test(h.username)));
  const typo = await hits(`${adjective} drumer`, 100);
  assert(typo.some((h) => h.id === drummer.id), `typo: ${JSON.stringify(typo.slice(0, 3))}`);
  const exact = await hits(drummer.username);
  assertEquals(exact[0].id, drummer.id);
  assertEquals((await hits("use", 500)).length <= 100, true);
  await assertProblem(await call("/search?q="), 400, "q");
  await assertProblem(await call(`/search?q=${"x".repeat(65)}`), 400, "q");
  assertEquals(dbStatements(await call("/search?q=velvet")), 1);
  // 7 searches so far in this test; the 60th passes, the 61st is refused.
  const statuses = [];
  for (let i = 0; i < 53; i++) statuses.push((await call("/search?q=velvet")).status);
  assertEquals(statuses.filter((s) => s !== 200).length, 0);
  const refused = await call("/search?q=velvet");
  await assertProblem(refused, 429);
  assertMatch(refused.headers.get("retry-after") ?? "", /^\d+$/);
});

it("search bounds: under 3 characters → 400 naming q; the SQL ranks at most 100", async ({ env, call, userIds }) => {
  const token = await env.keys.mint(userIds[42]); // the demo user spent its 60/min above
  await assertProblem(await call("/search?q=ab", { token }), 400, "q");
  await assertProblem(await call(`/search?q=${encodeURIComponent("  e ")}`, { token }), 400, "q");
  // Every seeded username starts with "user": the function clamps whatever limit it is given.
  const [{ n }] = await env.db.sql`
    select count(*)::int as n from public.search_profiles('user', 'user:*', 1000)`;
  assertEquals(n, 100);
});

it("search: 2 in flight per user (429 beyond), each cut at its own statement timeout (503)", async ({ env, call, userIds }) => {
  const [alice, bob] = await Promise.all([userIds[40], userIds[41]].map((id) => env.keys.mint(id)));
  const locker = await env.db.sql.reserve();
  await locker`begin`;
  await locker`lock table public.profiles in access exclusive mode`; // every search now waits
  try {
    const start = performance.now();
    const answers = await Promise.all([
      ...[1, 2, 3].map(() => call("/search?q=velvet", { token: alice })),
      call("/search?q=velvet", { token: bob }),
    ]);
    const elapsed = performance.now() - start;
    const alices = answers.slice(0, 3).map((r) => r.status).sort();
    assertEquals(alices, [429, 503, 503]);
    assertEquals(answers[3].status, 503); // bob has slots of his own
    const refused = answers.find((r) => r.status === 429)!;
    await assertProblem(refused, 429, "search");
    assertMatch(refused.headers.get("retry-after") ?? "", /^\d+$/);
    // The one that got the search lane's connection ran into its 300 ms statement timeout;
    // the others gave up waiting for that connection after 100 ms. All say when to retry.
    const busy = answers.filter((r) => r.status === 503);
    const details = await Promise.all(busy.map(async (r) => (await r.clone().json()).detail));
    assert(details.some((d) => d.includes("300 ms")), JSON.stringify(details));
    for (const r of busy) {
      await assertProblem(r, 503);
      assertMatch(r.headers.get("retry-after") ?? "", /^\d+$/);
    }
    // The statement timeout (300 ms), not the request budget (10 s), ended the searches.
    assert(elapsed < 8000, `searches ended after ${elapsed} ms`);
  } finally {
    await locker`rollback`;
    locker.release();
  }
  // The slots were handed back: alice searches again.
  assertEquals((await call("/search?q=velvet", { token: alice })).status, 200);
});

it("one statement per request: profile (cold), edit, follow, followers page", async ({ call, patchMe, userIds }) => {
  const id = userIds[90];
  await call(`/${id}/follow`, { method: "DELETE" });
  const cold = await call(`/${id}`);
  assertEquals(dbStatements(cold), 1);
  assertEquals(dbStatements(await call(`/${id}`)), 0);
  assertEquals(dbStatements(await patchMe({ bio: "counting" })), 1);
  assertEquals(dbStatements(await call(`/${id}/follow`, { method: "PUT" })), 1);
  assertEquals(dbStatements(await call(`/${id}/followers`)), 1);
  assertEquals(dbStatements(await call(`/${DEMO_USER_ID}/following?limit=5`)), 1);
});

it("uppercase ids are the same ids: read, batch, follow and unfollow, self-follow", async ({ call, userIds }) => {
  const target = userIds[140];
  const upper = target.toUpperCase();
  const byUpper = await call(`/${upper}`);
  assertEquals(byUpper.status, 200, await byUpper.clone().text());
  assertEquals((await byUpper.json()).id, target);
  const batch = await (await call(`?ids=${upper},${target}`)).json();
  assertEquals(batch.items.map((p: Profile) => p.id), [target]);
  // Following by the uppercase id invalidates the (canonical) cached entry at once.
  await call(`/${target}/follow`, { method: "DELETE" });
  const base: Profile = await (await call(`/${target}`)).json(); // cached now
  const followed = await call(`/${upper}/follow`, { method: "PUT" });
  assertEquals(followed.status, 200);
  assertEquals((await followed.json()).id, target);
  assertEquals((await (await call(`/${target}`)).json()).follower_count, base.follower_count + 1);
  await call(`/${upper}/follow`, { method: "DELETE" });
  assertEquals((await (await call(`/${target}`)).json()).follower_count, base.follower_count);
  // Following yourself by your id in capitals is the same 400, not a database error.
  await assertProblem(
    await call(`/${DEMO_USER_ID.toUpperCase()}/follow`, { method: "PUT" }),
    400,
    "follow yourself",
  );
});

it("control characters in display_name or bio: 400 naming the field", async ({ patchMe }) => {
  await assertProblem(await patchMe({ bio: "a\u0000b" }), 400, "bio");
  await assertProblem(await patchMe({ display_name: "x\u0007y" }), 400, "display_name");
});
