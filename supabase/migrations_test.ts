/**
 * Migrations against a real Postgres: apply/re-apply with the Supabase CLI,
 * RLS, keyset pagination of the feed RPCs, their plans, exact like counts.
 *
 *   deno test -A migrations/migrations_test.ts
 */
import { deepStrictEqual, ok } from "node:assert/strict";
import postgres from "postgres";
import {
  bootstrap,
  connect,
  createDatabase,
  databaseUrl,
  dropDatabase,
  migrate,
  migrationFiles,
} from "../scripts/dev/db.ts";
import { adminUrl, testDatabase } from "../scripts/testing/test_db.ts";
import { enqueue } from "../shared/jobs/queue.ts";
import { DEMO_USER_ID, seed } from "../scripts/testing/seed.ts";

type Tx = postgres.TransactionSql;

// Small assertion helpers (JSR's @std/assert is not reachable from our machines).
function assert(cond: unknown, msg?: string): asserts cond {
  ok(cond, msg);
}
function assertEquals(actual: unknown, expected: unknown, msg?: string) {
  deepStrictEqual(JSON.parse(JSON.stringify(actual)), JSON.parse(JSON.stringify(expected)), msg);
}
async function assertRejects(
  fn: () => Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  errorClass: new (...args: any[]) => Error,
  includes?: string,
) {
  try {
    await fn();
  } catch (err) {
    ok(err instanceof errorClass, `expected ${errorClass.name}, got ${err}`);
    if (includes) {
      ok(
        String((err as Error).message).includes(includes),
        `"${(err as Error).message}" lacks "${includes}"`,
      );
    }
    return;
  }
  throw new Error("expected rejection");
}

/** Runs fn inside a transaction as `authenticated` (uid) or `anon` (null), like PostgREST. */
async function asUser<T>(sql: postgres.Sql, uid: string | null, fn: (tx: Tx) => Promise<T>) {
  return await sql.begin(async (tx) => {
    const role = uid ? "authenticated" : "anon";
    const claims = JSON.stringify(uid ? { sub: uid, role } : { role });
    await tx`select set_config('role', ${role}, true), set_config('request.jwt.claims', ${claims}, true)`;
    return await fn(tx);
  }) as T;
}

async function makeUser(sql: postgres.Sql, username: string): Promise<string> {
  const id = crypto.randomUUID();
  await sql`insert into auth.users (id, email) values (${id}, ${username + "@test.local"})`;
  await sql`insert into public.profiles (id, username) values (${id}, ${username})`;
  return id;
}

Deno.test("migrations apply on an empty database with the CLI, and a second run is a no-op", async () => {
  const admin = adminUrl();
  const name = `rockout_t_mig_${crypto.randomUUID().slice(0, 8)}`;
  await createDatabase(admin, name);
  const url = databaseUrl(admin, name);
  try {
    await bootstrap(url);
    const first = await migrate(url);
    assert(/Applying migration/.test(first), first);
    const sql = connect(url);
    try {
      const before =
        await sql`select version, name, statements from supabase_migrations.schema_migrations order by version`;
      assert(before.length >= 5, `expected ≥5 migrations, got ${before.length}`);
      const second = await migrate(url);
      assert(!/Applying migration/.test(second), second);
      const after =
        await sql`select version, name, statements from supabase_migrations.schema_migrations order by version`;
      assertEquals(after, before);
      const tables = await sql`
        select c.relname, c.relrowsecurity from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and c.relkind = 'r' order by 1`;
      const names = tables.map((t) => t.relname);
      for (const t of ["follows", "likes", "posts", "profiles"]) {
        assert(names.includes(t), `${t} missing`);
      }
      const withoutRls = tables.filter((t) => !t.relrowsecurity).map((t) => t.relname);
      assertEquals(withoutRls, [], "RLS enabled on every table");
      const files = [...Deno.readDirSync(new URL("./migrations/", import.meta.url))]
        .filter((f) => /^\d{14}_.+\.sql$/.test(f.name));
      assertEquals(after.length, files.length, "every migration file applied");
    } finally {
      await sql.end();
    }
  } finally {
    await dropDatabase(admin, name);
  }
});

Deno.test("migrate fails loudly on an unreachable database", async () => {
  await assertRejects(
    () => migrate("postgres://postgres@127.0.0.1:1/nope?connect_timeout=2"),
    Error,
    "supabase migration up failed",
  );
});

Deno.test("RLS: own rows only; drafts private; anon reads published only", async () => {
  await using db = await testDatabase();
  const { sql } = db;
  const a = await makeUser(sql, "alice");
  const b = await makeUser(sql, "bob");
  await sql`insert into public.posts (author_id, body, status) values
    (${b}, 'bob published', 'published'), (${b}, 'bob draft', 'draft'), (${a}, 'alice draft', 'draft')`;

  // A sees B's published post and her own draft, not B's draft.
  const seen = await asUser(sql, a, (tx) => tx`select body from public.posts order by body`);
  assertEquals(seen.map((r) => r.body), ["alice draft", "bob published"]);

  // A cannot insert a post as B.
  await assertRejects(
    () =>
      asUser(
        sql,
        a,
        (tx) => tx`insert into public.posts (author_id, body) values (${b}, 'forged')`,
      ),
    postgres.PostgresError,
    "row-level security",
  );
  // A can insert as herself; hot_score comes from the trigger.
  const [mine] = await asUser(
    sql,
    a,
    (tx) =>
      tx`insert into public.posts (author_id, body) values (${a}, 'mine') returning hot_score`,
  );
  assert(mine.hot_score > 0);

  // A cannot update B's profile (no row visible to the update), nor B's post.
  const upd = await asUser(
    sql,
    a,
    (tx) => tx`update public.profiles set bio = 'hacked' where id = ${b}`,
  );
  assertEquals(upd.count, 0);
  const updPost = await asUser(
    sql,
    a,
    (tx) => tx`update public.posts set body = 'hacked' where author_id = ${b}`,
  );
  assertEquals(updPost.count, 0);
  const [bob] = await sql`select bio from public.profiles where id = ${b}`;
  assertEquals(bob.bio, null);
  // A can update her own profile, but not counters on her posts.
  const own = await asUser(
    sql,
    a,
    (tx) => tx`update public.profiles set bio = 'hi' where id = ${a}`,
  );
  assertEquals(own.count, 1);
  await assertRejects(
    () =>
      asUser(sql, a, (tx) => tx`update public.posts set like_count = 999 where author_id = ${a}`),
    postgres.PostgresError,
    "permission denied",
  );

  // A cannot follow on B's behalf, nor like as B.
  await assertRejects(
    () =>
      asUser(
        sql,
        a,
        (tx) => tx`insert into public.follows (follower_id, followee_id) values (${b}, ${a})`,
      ),
    postgres.PostgresError,
    "row-level security",
  );
  await asUser(
    sql,
    a,
    (tx) => tx`insert into public.follows (follower_id, followee_id) values (${a}, ${b})`,
  );

  // anon: reads published posts and profiles, writes nothing, sees no follows.
  const anonPosts = await asUser(
    sql,
    null,
    (tx) => tx`select body from public.posts order by body`,
  );
  assertEquals(anonPosts.map((r) => r.body), ["bob published", "mine"]);
  const anonFollows = await asUser(sql, null, (tx) => tx`select * from public.follows`);
  assertEquals(anonFollows.length, 0);
  await assertRejects(
    () =>
      asUser(
        sql,
        null,
        (tx) => tx`insert into public.posts (author_id, body) values (${a}, 'anon')`,
      ),
    postgres.PostgresError,
  );
  await assertRejects(
    () => asUser(sql, null, (tx) => tx`select * from public.feed_following(10)`),
    postgres.PostgresError,
    "permission denied",
  );
  const forYou = await asUser(sql, null, (tx) => tx`select body from public.feed_for_you(10)`);
  assertEquals(forYou.map((r) => r.body).sort(), ["bob published", "mine"]);
});

Deno.test("keyset: every page of feed_following and feed_for_you, ties included, each post exactly once", async () => {
  await using db = await testDatabase();
  const { sql } = db;
  const viewer = await makeUser(sql, "viewer");
  const authors = [];
  for (let i = 0; i < 5; i++) authors.push(await makeUser(sql, `author_${i}`));
  const stranger = await makeUser(sql, "stranger");
  for (const f of authors.slice(0, 4)) {
    await sql`insert into public.follows (follower_id, followee_id) values (${viewer}, ${f})`;
  }
  // 50 posts sharing one created_at (and hence one hot_score), spread over 4 followed authors.
  await sql`
    insert into public.posts (author_id, body, created_at)
    select (${
    sql.array(authors.slice(0, 4))
  }::uuid[])[1 + g % 4], 'tie ' || g, '2026-11-01 12:00:00.123456+00'
    from generate_series(1, 50) g`;
  // Distinct timestamps with microseconds, some liked (different hot scores).
  await sql`
    insert into public.posts (author_id, body, created_at)
    select (${sql.array(authors)}::uuid[])[1 + g % 5], 'spread ' || g,
           '2026-11-02 00:00:00+00'::timestamptz - g * interval '1 second 1 microsecond'
    from generate_series(1, 40) g`;
  await sql`insert into public.posts (author_id, body, status) values
    (${authors[0]}, 'draft', 'draft'), (${
    authors[1]
  }, 'deleted', 'deleted'), (${stranger}, 'stranger', 'published')`;
  await sql`insert into public.likes (user_id, post_id)
    select ${stranger}::uuid, id from public.posts where body like 'spread %' and right(body, 1) in ('1', '3')`;

  const expectFollowing = (await sql`
    select p.id from public.posts p join public.follows f on f.followee_id = p.author_id
    where f.follower_id = ${viewer} and p.status = 'published'`).map((r) => r.id).sort();
  const expectAll = (await sql`select id from public.posts where status = 'published'`)
    .map((r) => r.id).sort();
  assertEquals(expectFollowing.length, 50 + 32);

  // NB: the created_at cursor travels as text and is cast in SQL. A bare
  // timestamptz parameter would make postgres.js serialize it through a JS
  // Date, dropping the microseconds (and skipping rows).
  async function walk(fn: "feed_following" | "feed_for_you", uid: string | null) {
    const seen: string[] = [];
    let cursor: [string, string] | null = null;
    for (let page = 0; page < 100; page++) {
      const c: [string, string] | null = cursor;
      const rows: postgres.Row[] = await asUser(
        sql,
        uid,
        (tx): Promise<postgres.Row[]> =>
          fn === "feed_following"
            ? tx`select * from public.feed_following(7, ${c?.[0] ?? null}::text::timestamptz, ${
              c?.[1] ?? null
            })`
            : tx`select * from public.feed_for_you(7, ${c?.[0] ?? null}, ${c?.[1] ?? null})`,
      );
      assert(rows.length <= 7);
      seen.push(...rows.map((r) => r.id));
      if (rows.length < 7) return seen;
      const last = rows[rows.length - 1];
      cursor = [last.cursor_key, last.id];
    }
    throw new Error("did not terminate");
  }

  const following = await walk("feed_following", viewer);
  assertEquals(following.length, new Set(following).size, "no duplicates");
  assertEquals([...following].sort(), expectFollowing);
  const forYou = await walk("feed_for_you", viewer);
  assertEquals(forYou.length, new Set(forYou).size, "no duplicates");
  assertEquals([...forYou].sort(), expectAll);
  const forYouAnon = await walk("feed_for_you", null);
  assertEquals(forYouAnon, forYou);

  // Shapes: author json, liked_by_me, exact cursor text.
  const [first] = await asUser(sql, stranger, (tx) => tx`select * from public.feed_for_you(1)`);
  assertEquals(Object.keys(first.author).sort(), ["avatar_url", "display_name", "id", "username"]);
  const [tie] = await asUser(
    sql,
    viewer,
    (tx) => tx`select * from public.feed_following(100) where body like 'tie %' limit 1`,
  );
  assertEquals(tie.cursor_key, "2026-11-01 12:00:00.123456+00");
  assertEquals(tie.liked_by_me, false);
  const liked = await asUser(sql, stranger, async (tx) => {
    const ids = (await tx`select id from public.posts where body in ('spread 1', 'spread 2')`).map((
      r,
    ) => r.id);
    return (await tx`select * from public.liked_post_ids(${ids})`).map((r) => r.liked_post_ids);
  });
  assertEquals(liked.length, 1);
});

/** Walks an EXPLAIN (FORMAT JSON) plan tree. */
function* nodes(plan: Record<string, unknown>): Generator<Record<string, unknown>> {
  yield plan;
  for (const child of (plan.Plans as Record<string, unknown>[] | undefined) ?? []) {
    yield* nodes(child);
  }
}

Deno.test("feed RPC plans on seeded data: index scans, no Seq Scan on posts, no Sort over posts", async () => {
  await using db = await testDatabase();
  const { sql } = db;
  // Users, posts and follows at full scale (the plans are about them); one like per post on
  // average instead of three, and no recall catalog: the feeds read neither.
  const r = await seed(sql, { users: 2000, posts: 20000, likes: 1, songs: 0 });
  console.log(`seeded ${r.posts} posts / ${r.users} users in ${r.ms} ms`);
  const [{ followees }] =
    await sql`select count(*)::int as followees from public.follows where follower_id = ${DEMO_USER_ID}`;
  const [{ total }] = await sql`select count(*)::int as total from public.posts`;

  // The bodies as stored (pg_proc.prosrc), parameters → $n, planned generically
  // as PG 15–17 plan a non-inlined SQL function's statements.
  const fns = {
    feed_following: ["p_limit", "p_before_created_at", "p_before_id"],
    feed_for_you: ["p_limit", "p_before_score", "p_before_id"],
  } as const;
  await asUser(sql, DEMO_USER_ID, async (tx) => {
    await tx`set local plan_cache_mode = force_generic_plan`;
    const deepF = await tx`select cursor_key, id from public.feed_following(60) offset 59`;
    const deepY = await tx`select cursor_key, id from public.feed_for_you(5000) offset 4999`;
    assert(deepF.length === 1 && deepY.length === 1, "enough data for a deep page");
    for (const [fn, params] of Object.entries(fns)) {
      const [{ prosrc, types }] = await tx`
        select prosrc, array_to_string(proargtypes::regtype[]::text[], ',') as types
        from pg_proc where proname = ${fn} and pronamespace = 'public'::regnamespace`;
      let body = prosrc as string;
      params.forEach((p, i) => body = body.replace(new RegExp(`\\b${p}\\b`, "g"), `$${i + 1}`));
      await tx.unsafe(`prepare ${fn}_q(${types}) as ${body}`);
      const deep = fn === "feed_following" ? deepF[0] : deepY[0];
      for (const args of [`20, null, null`, `20, '${deep.cursor_key}', '${deep.id}'`]) {
        const [row] = await tx.unsafe(`explain (analyze, format json) execute ${fn}_q(${args})`);
        const plan = (row["QUERY PLAN"] as { Plan: Record<string, unknown> }[])[0].Plan;
        const all = [...nodes(plan)];
        const label = `${fn}(${args})`;
        assertEquals(
          all.filter((n) => n["Node Type"] === "Seq Scan").map((n) => n["Relation Name"]),
          [],
          label,
        );
        const postScans = all.filter((n) => n["Relation Name"] === "posts");
        assert(
          postScans.length > 0 && postScans.every((n) => String(n["Node Type"]).includes("Index")),
          label,
        );
        // Keyset is an index condition, never a filter.
        for (const n of postScans) {
          assert(!String(n.Filter ?? "").includes("ROW("), `${label}: keyset filter`);
        }
        for (const s of all.filter((n) => n["Node Type"] === "Sort")) {
          const input = (s.Plans as Record<string, unknown>[])[0];
          const rows = Number(input["Actual Rows"]) * Number(input["Actual Loops"]);
          assert(
            rows <= 20 * Number(followees),
            `${label}: Sort over ${rows} rows (posts: ${total})`,
          );
        }
      }
      await tx.unsafe(`deallocate ${fn}_q`);
    }
  });
});

Deno.test("like_count stays exact under 100 concurrent like/unlike statements", async () => {
  await using db = await testDatabase({ max: 20 });
  const { sql } = db;
  const author = await makeUser(sql, "author");
  const users: string[] = [];
  for (let i = 0; i < 100; i++) {
    users.push(await makeUser(sql, `fan_${String(i).padStart(3, "0")}`));
  }
  const [post] =
    await sql`insert into public.posts (author_id, body) values (${author}, 'hit') returning id, hot_score`;
  const like = (u: string) =>
    asUser(
      sql,
      u,
      (tx) =>
        tx`insert into public.likes (user_id, post_id) values (${u}, ${post.id}) on conflict do nothing`,
    );
  const unlike = (u: string) =>
    asUser(
      sql,
      u,
      (tx) => tx`delete from public.likes where user_id = ${u} and post_id = ${post.id}`,
    );

  await Promise.all([...users.map(like), ...users.slice(0, 20).map(like)]); // 120 statements, 20 duplicates
  let [row] = await sql`select like_count, hot_score from public.posts where id = ${post.id}`;
  assertEquals(row.like_count, 100);
  assert(row.hot_score > post.hot_score, "hot_score follows like_count");

  await Promise.all([
    ...users.slice(0, 60).map(unlike),
    ...users.slice(60).map(like),
    ...users.slice(0, 10).map(unlike),
  ]);
  [row] = await sql`select like_count from public.posts where id = ${post.id}`;
  const [{ n }] = await sql`select count(*)::int as n from public.likes where post_id = ${post.id}`;
  assertEquals(n, 40);
  assertEquals(row.like_count, 40);

  // Deleting a post cascades to its likes without tripping the count trigger.
  await sql`delete from public.posts where id = ${post.id}`;
  const [{ left }] = await sql`select count(*)::int as left from public.likes`;
  assertEquals(left, 0);
});

Deno.test("jobs_job_key: reply targets move into the payload and a job key, no data lost", async () => {
  const admin = adminUrl();
  const name = `rockout_t_jobkey_${crypto.randomUUID().slice(0, 8)}`;
  await createDatabase(admin, name);
  const url = databaseUrl(admin, name);
  const target = "20261128000500_jobs_job_key.sql";
  const dir = new URL("./migrations/", import.meta.url);
  const sql = connect(url);
  try {
    await bootstrap(url);
    for (const file of (await migrationFiles()).filter((f) => f < target)) {
      await sql.unsafe(await Deno.readTextFile(new URL(file, dir))).simple();
    }
    const author = await makeUser(sql, "jobkey_author");
    const [post] =
      await sql`insert into public.posts (author_id, body) values (${author}, 'riff') returning id`;
    const [p1, p2] = [
      "00000000-0000-4000-a000-000000000001",
      "00000000-0000-4000-a000-000000000002",
    ];
    // Rows as the old queue wrote them: targets in columns only, an empty payload.
    await sql`
      insert into public.jobs (job_type, post_id, persona_id, status, finished_at) values
        ('generate_reply', ${post.id}, ${p1}, 'done', now()),
        ('generate_reply', ${post.id}, ${p1}, 'pending', null),
        ('generate_reply', ${post.id}, ${p2}, 'failed', null)`;
    await sql`insert into public.jobs (job_type, payload) values ('digest', '{"day": "2026-11-27"}')`;

    await sql.unsafe(await Deno.readTextFile(new URL(target, dir))).simple();

    const rows = await sql`
      select payload, job_key, status from public.jobs where job_type = 'generate_reply'
      order by payload->>'persona_id', status`;
    const key = (persona: string) => `generate_reply:${post.id}:${persona}`;
    assertEquals(rows, [
      { payload: { post_id: post.id, persona_id: p1 }, job_key: key(p1), status: "done" },
      { payload: { post_id: post.id, persona_id: p1 }, job_key: key(p1), status: "pending" },
      { payload: { post_id: post.id, persona_id: p2 }, job_key: key(p2), status: "failed" },
    ]);
    const [digest] = await sql`select payload, job_key from public.jobs where job_type = 'digest'`;
    assertEquals(digest, { payload: { day: "2026-11-27" }, job_key: null });
    const [{ columns }] = await sql`
      select array_agg(column_name::text) as columns from information_schema.columns
      where table_schema = 'public' and table_name = 'jobs' and column_name in ('post_id', 'persona_id')`;
    assertEquals(columns, null);
    // One active job per key: a second active row is refused…
    await assertRejects(
      () => sql`insert into public.jobs (job_type, job_key) values ('generate_reply', ${key(p2)})`,
      Error,
      "jobs_job_key_active_idx",
    );
    // …and enqueueing a duplicate returns the existing job.
    const [active] = await sql`select id from public.jobs where job_key = ${
      key(p1)
    } and status = 'pending'`;
    const again = await enqueue({
      type: "generate_reply",
      payload: { post_id: post.id, persona_id: p1 },
      jobKey: key(p1),
    }, sql);
    assertEquals(again, { id: active.id, status: "pending", created: false });
  } finally {
    await sql.end();
    await dropDatabase(admin, name);
  }
});
