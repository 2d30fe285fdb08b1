/**
 * Database tooling against a real Postgres: bootstrap idempotency, URL
 * helpers, deterministic seeding.
 *
 *   deno test -A scripts/dev/db_test.ts
 */
import { deepStrictEqual, ok } from "node:assert/strict";
import { bootstrap, connect, createDatabase, databaseUrl, dropDatabase } from "./db.ts";
import { adminUrl, testDatabase } from "../testing/test_db.ts";
import { DEMO_USER_ID, isEmpty, plan, seed } from "../testing/seed.ts";

Deno.test("databaseUrl swaps only the database name", () => {
  deepStrictEqual(
    databaseUrl("postgres://u:p%40ss@db.example:6543/postgres?sslmode=require", "rockout_t_1"),
    "postgres://u:p%40ss@db.example:6543/rockout_t_1?sslmode=require",
  );
  deepStrictEqual(databaseUrl("postgresql://127.0.0.1/x", "y"), "postgresql://127.0.0.1/y");
});

Deno.test("bootstrap on a plain Postgres is idempotent and gives Supabase's auth helpers", async () => {
  const admin = adminUrl();
  const name = `rockout_t_bs_${crypto.randomUUID().slice(0, 8)}`;
  await createDatabase(admin, name);
  const url = databaseUrl(admin, name);
  try {
    await bootstrap(url);
    await bootstrap(url); // twice: no error
    const sql = connect(url);
    try {
      const roles = await sql`
        select rolname, rolbypassrls from pg_roles
        where rolname in ('anon', 'authenticated', 'service_role') order by rolname`;
      deepStrictEqual(roles.map((r) => [r.rolname, r.rolbypassrls]), [
        ["anon", false],
        ["authenticated", false],
        ["service_role", true],
      ]);
      const uid = "11111111-2222-4333-8444-555555555555";
      const [row] = await sql.begin((tx) => [
        tx`select set_config('role', 'authenticated', true),
                  set_config('request.jwt.claims', ${
          JSON.stringify({ sub: uid, role: "authenticated" })
        }, true)`,
        tx`select auth.uid() as uid, auth.role() as role, auth.jwt() ->> 'sub' as sub, current_user as me`,
      ]).then((r) => r[1]);
      deepStrictEqual({ ...row }, { uid, role: "authenticated", sub: uid, me: "authenticated" });
      const [legacy] = await sql.begin((tx) => [
        tx`select set_config('request.jwt.claim.sub', ${uid}, true)`,
        tx`select auth.uid() as uid`,
      ]).then((r) => r[1]);
      deepStrictEqual(legacy.uid, uid);
      const [none] = await sql`select auth.uid() as uid, auth.jwt() as jwt`;
      deepStrictEqual({ ...none }, { uid: null, jwt: null });
      const [ext] =
        await sql`select count(*)::int as n from pg_extension where extname = 'pg_trgm'`;
      ok(ext.n <= 1);
    } finally {
      await sql.end();
    }
  } finally {
    await dropDatabase(admin, name);
  }
});

Deno.test("seed plan is deterministic (ids, usernames, bodies, graphs)", () => {
  const a = plan({ users: 300, posts: 2000 }, 1_700_000_000_000_000);
  const b = plan({ users: 300, posts: 2000 }, 1_800_000_000_000_000);
  deepStrictEqual(a.userIds, b.userIds);
  deepStrictEqual(a.usernames, b.usernames);
  deepStrictEqual(a.displayNames, b.displayNames);
  deepStrictEqual(a.postIds, b.postIds);
  deepStrictEqual(a.postBody, b.postBody);
  deepStrictEqual(a.followPairs, b.followPairs);
  deepStrictEqual(a.likePairs, b.likePairs);
  deepStrictEqual(a.userIds[0], DEMO_USER_ID);
  ok(new Set(a.postIds).size === a.postIds.length, "post ids unique");
  ok(a.usernames.every((u) => /^[a-z0-9_]{3,30}$/.test(u)));
  const c = plan({ users: 300, posts: 2000, seed: 7 });
  ok(c.postIds[5] !== a.postIds[5], "another seed, other ids");
});

Deno.test("seed: two databases seeded alike hold the same rows; counts exact", async () => {
  await using one = await testDatabase();
  await using two = await testDatabase();
  ok(await isEmpty(one.sql));
  // Big enough that follows and likes (~14,000 and ~12,000 rows of ~100 bytes) each pass the
  // 1 MiB COPY buffer, so rows go out in several writes with backpressure, as at any scale.
  const size = { users: 700, posts: 4000 };
  const [r1, r2] = await Promise.all([seed(one.sql, size), seed(two.sql, size)]);
  console.log(
    `seed ${size.users} users / ${size.posts} posts: ${r1.ms} ms ` +
      `(${r1.follows} follows, ${r1.likes} likes)`,
  );
  ok(!(await isEmpty(one.sql)));
  deepStrictEqual({ ...r1, ms: 0 }, { ...r2, ms: 0 });

  const snapshot = async (db: typeof one) => {
    const [s] = await db.sql`
      select
        (select md5(string_agg(id::text || username || coalesce(display_name, ''), ',' order by id)) from public.profiles) as profiles,
        (select md5(string_agg(id::text || author_id::text || body || status, ',' order by id)) from public.posts) as posts,
        (select md5(string_agg(follower_id::text || '>' || followee_id::text, ',' order by follower_id, followee_id)) from public.follows) as follows,
        (select md5(string_agg(user_id::text || '>' || post_id::text, ',' order by user_id, post_id)) from public.likes) as likes`;
    return { ...s };
  };
  deepStrictEqual(await snapshot(one), await snapshot(two));

  const [check] = await one.sql`
    select
      (select count(*)::int from public.posts p
        where p.like_count <> (select count(*) from public.likes l where l.post_id = p.id)) as bad_counts,
      (select count(*)::int from public.follows where follower_id = ${DEMO_USER_ID}) as demo_follows,
      (select username from public.profiles where id = ${DEMO_USER_ID}) as demo_username,
      (select email from auth.users where id = ${DEMO_USER_ID}) as demo_email,
      (select count(*)::int from public.posts
        where created_at < now() - interval '31 days' or created_at > now()) as out_of_range`;
  deepStrictEqual({ ...check }, {
    bad_counts: 0,
    demo_follows: 50,
    demo_username: "demo",
    demo_email: "demo@rockout.local",
    out_of_range: 0,
  });
});
