/**
 * Least privilege of the API roles, against a real Postgres: no TRUNCATE/TRIGGER/REFERENCES
 * (nor setval) for anon and authenticated on any public table, every SECURITY DEFINER
 * function pinned to `search_path = ''` and executable only by the roles that need it, and
 * the same after migrating a database that starts from Supabase's own `grant all` defaults.
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
} from "../scripts/dev/db.ts";
import { adminUrl, testDatabase } from "../scripts/testing/test_db.ts";

type Sql = postgres.Sql;

/**
 * The public functions anon and authenticated may execute, and who; every other function in
 * public: neither. A new RPC is added here deliberately, with its migration's grant.
 */
const executeAllowList: Record<string, string[]> = {
  // Public, read-only, invoker (RLS applies): what a signed-out caller reads, a signed-in one may.
  "feed_for_you(integer,double precision,uuid)": ["anon", "authenticated"],
  "search_songs(text,integer)": ["anon", "authenticated"],
  "match_songs(text[],text[])": ["anon", "authenticated"],
  // The author shape, inlined into the feeds and the post/thread reads (inlining checks EXECUTE).
  "author_json(profiles)": ["anon", "authenticated"],
  "feed_following(integer,timestamp with time zone,uuid)": ["authenticated"],
  "liked_post_ids(uuid[])": ["authenticated"],
  "apply_likes(uuid[],uuid[])": ["authenticated"],
  "set_follow(uuid,boolean)": ["authenticated"],
  "search_profiles(text,text,integer)": ["authenticated"],
  "get_recall_threads_paginated(integer,timestamp with time zone,uuid)": ["authenticated"],
  "get_recall_messages_paginated(uuid,timestamp with time zone,uuid,integer)": ["authenticated"],
  "insert_recall_messages_batch(uuid,text,text,text,text,text,jsonb)": ["authenticated"],
  // Called by the invoker trigger posts_set_hot_score when a user writes their post.
  "posts_hot_score(integer,integer,timestamp with time zone)": ["authenticated"],
};
const apiRoles = ["anon", "authenticated"];

/** Runs fn in a transaction as `authenticated` (uid) or `anon` (null), as PostgREST does. */
async function asUser<T>(
  sql: Sql,
  uid: string | null,
  fn: (tx: postgres.TransactionSql) => Promise<T>,
) {
  return await sql.begin(async (tx) => {
    const role = uid ? "authenticated" : "anon";
    const claims = JSON.stringify(uid ? { sub: uid, role } : { role });
    await tx`select set_config('role', ${role}, true), set_config('request.jwt.claims', ${claims}, true)`;
    return await fn(tx);
  }) as T;
}

async function errorOf(work: () => Promise<unknown>): Promise<postgres.PostgresError> {
  try {
    await work();
  } catch (err) {
    ok(err instanceof postgres.PostgresError, String(err));
    return err;
  }
  throw new Error("expected the statement to be refused");
}

async function makeUser(sql: Sql, username: string): Promise<string> {
  const id = crypto.randomUUID();
  await sql`insert into auth.users (id, email) values (${id}, ${username + "@test.local"})`;
  await sql`insert into public.profiles (id, username) values (${id}, ${username})`;
  return id;
}

/** Every (role, table, privilege) an API role holds among TRUNCATE/TRIGGER/REFERENCES. */
async function dangerousTablePrivileges(sql: Sql): Promise<string[]> {
  const rows = await sql`
    select r.role, c.relname, p.priv
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
      cross join unnest(${apiRoles}::text[]) as r(role)
      cross join unnest(array['TRUNCATE', 'TRIGGER', 'REFERENCES']) as p(priv)
     where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm')
       and has_table_privilege(r.role, c.oid, p.priv)
     order by 1, 2, 3`;
  return rows.map((r) => `${r.role} ${r.priv} ${r.relname}`);
}

/** Every (role, sequence) where an API role may setval. */
async function sequenceUpdates(sql: Sql): Promise<string[]> {
  const rows = await sql`
    select r.role, c.relname
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
      cross join unnest(${apiRoles}::text[]) as r(role)
     where n.nspname = 'public' and c.relkind = 'S'
       and has_sequence_privilege(r.role, c.oid, 'UPDATE')`;
  return rows.map((r) => `${r.role} UPDATE ${r.relname}`);
}

/** What is wrong with the public schema's SECURITY DEFINER functions (empty: nothing). */
async function definerProblems(sql: Sql): Promise<{ problems: string[]; names: string[] }> {
  const rows = await sql`
    select p.oid, p.proname || '(' || oidvectortypes(p.proargtypes) || ')' as sig,
           p.proconfig, p.proacl::text[] as acl
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public' and p.prosecdef
     order by 2`;
  const problems: string[] = [];
  for (const r of rows) {
    const sig = (r.sig as string).replaceAll(", ", ",");
    const config = (r.proconfig ?? []) as string[];
    if (!config.includes('search_path=""')) {
      problems.push(`${sig}: search_path is ${JSON.stringify(config)}, not ''`);
    }
    // An ACL entry "=X/owner" is EXECUTE for PUBLIC (every role, present and future).
    if (r.acl === null || (r.acl as string[]).some((e) => /^=[^/]*X/.test(e))) {
      problems.push(`${sig}: executable by PUBLIC`);
    }
    const allowed = executeAllowList[sig] ?? [];
    for (const role of apiRoles) {
      const [{ can }] =
        await sql`select has_function_privilege(${role}, ${r.oid}::oid, 'EXECUTE') as can`;
      if (can && !allowed.includes(role)) problems.push(`${sig}: executable by ${role}`);
    }
  }
  return { problems, names: rows.map((r) => (r.sig as string).replaceAll(", ", ",")) };
}

/**
 * Every (function, role) where anon or authenticated may execute a function of public that the
 * allow-list doesn't name, or may not execute one it does (a stale or missing grant).
 */
async function executeProblems(sql: Sql): Promise<string[]> {
  const rows = await sql`
    select p.proname || '(' || oidvectortypes(p.proargtypes) || ')' as sig, r.role,
           has_function_privilege(r.role, p.oid, 'EXECUTE') as can
      from pg_proc p
      join pg_namespace n on n.oid = p.pronamespace
      cross join unnest(${apiRoles}::text[]) as r(role)
     where n.nspname = 'public'
       and not exists (select from pg_depend d
                        where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
     order by 1, 2`;
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const r of rows) {
    const sig = (r.sig as string).replaceAll(", ", ",");
    seen.add(sig);
    const allowed = (executeAllowList[sig] ?? []).includes(r.role);
    if (r.can && !allowed) problems.push(`${r.role} may execute ${sig} (not in the allow-list)`);
    if (!r.can && allowed) problems.push(`${r.role} may not execute ${sig} (allow-listed)`);
  }
  for (const sig of Object.keys(executeAllowList)) {
    if (!seen.has(sig)) problems.push(`allow-listed ${sig} does not exist`);
  }
  return problems;
}

/**
 * Creates a SECURITY DEFINER function as the connection's user (postgres, who runs the
 * migrations) and asserts that neither anon nor authenticated may execute it.
 */
async function assertNewDefinerRefused(sql: Sql, name: string): Promise<void> {
  await sql.unsafe(
    `create function public.${name}() returns int language sql security definer set search_path = '' as 'select 1'`,
  );
  const [{ owner }] = await sql.unsafe(
    `select proowner::regrole::text as owner from pg_proc where proname = '${name}'`,
  );
  deepStrictEqual(owner, "postgres");
  for (const role of apiRoles) {
    const [{ can }] = await sql`
      select has_function_privilege(${role}, ${`public.${name}()`}, 'EXECUTE') as can`;
    deepStrictEqual(can, false, `${role} may execute the new ${name}()`);
  }
  const user = crypto.randomUUID();
  for (const uid of [null, user]) {
    const err = await errorOf(() => asUser(sql, uid, (tx) => tx.unsafe(`select public.${name}()`)));
    deepStrictEqual(err.code, "42501", `${uid ? "authenticated" : "anon"}: ${err.message}`);
  }
  await sql.unsafe(`drop function public.${name}()`);
}

Deno.test("as authenticated or anon, TRUNCATE, TRIGGER and REFERENCES are refused on every public table", async () => {
  await using db = await testDatabase();
  const { sql } = db;
  deepStrictEqual(await dangerousTablePrivileges(sql), []);
  deepStrictEqual(await sequenceUpdates(sql), []);

  const a = await makeUser(sql, "alice");
  const [post] =
    await sql`insert into public.posts (author_id, body) values (${a}, 'hi') returning id`;
  await sql`insert into public.likes (user_id, post_id) values (${a}, ${post.id})`;
  const tables = await sql`
    select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'public' and c.relkind = 'r' order by 1`;
  ok(tables.length >= 10, `only ${tables.length} tables`);
  for (const uid of [a, null]) {
    for (const { relname } of tables) {
      const table = `public."${relname.replaceAll('"', '""')}"`;
      const truncate = await errorOf(() =>
        asUser(sql, uid, (tx) => tx.unsafe(`truncate ${table}`))
      );
      deepStrictEqual(truncate.code, "42501", `${relname}: ${truncate.message}`);
      const trigger = await errorOf(() =>
        asUser(
          sql,
          uid,
          (tx) =>
            tx.unsafe(
              `create trigger t_probe before update on ${table} for each row execute function suppress_redundant_updates_trigger()`,
            ),
        )
      );
      deepStrictEqual(trigger.code, "42501", `${relname}: ${trigger.message}`);
    }
  }
  const [{ n }] = await sql`select count(*)::int as n from public.likes`;
  deepStrictEqual(n, 1, "the likes survived");

  // REFERENCES: a foreign key from a caller's own table (in a schema where it may create one)
  // would let it block the post's deletion and probe which ids exist.
  await sql`create schema scratch`;
  await sql`grant usage, create on schema scratch to authenticated`;
  const refs = await errorOf(() =>
    asUser(sql, a, (tx) => tx`create table scratch.probe (p uuid references public.posts (id))`)
  );
  deepStrictEqual(refs.code, "42501", refs.message);
  // setval on events' identity would make every later insert collide.
  const setval = await errorOf(() =>
    asUser(sql, a, (tx) => tx`select setval(pg_get_serial_sequence('public.events', 'id'), 1)`)
  );
  deepStrictEqual(setval.code, "42501", setval.message);
});

Deno.test("every SECURITY DEFINER function: search_path '' and EXECUTE only for the roles that need it", async () => {
  await using db = await testDatabase();
  const { sql } = db;
  const { problems, names } = await definerProblems(sql);
  deepStrictEqual(problems, []);
  ok(names.includes("apply_likes(uuid[],uuid[])"), names.join(" "));
  ok(names.length >= 4, `definer functions: ${names.join(" ")}`);

  // The old lock helper is gone: nobody can lock somebody else's post rows at will.
  const [{ lock }] =
    await sql`select to_regprocedure('public.lock_posts_for_counters(uuid[])') as lock`;
  deepStrictEqual(lock, null);
  const anon = await errorOf(() =>
    asUser(sql, null, (tx) => tx`select * from public.apply_likes(${[]}::uuid[], ${[]}::uuid[])`)
  );
  deepStrictEqual(anon.code, "42501", anon.message);

  // A function added later is executable by nobody but the API roles' explicit grants.
  await sql`create function public.probe_later() returns int language sql security definer set search_path = '' as 'select 1'`;
  const [{ acl }] =
    await sql`select proacl::text[] as acl from pg_proc where proname = 'probe_later'`;
  ok(acl !== null && !(acl as string[]).some((e) => /^=[^/]*X/.test(e)), `PUBLIC executes: ${acl}`);
});

Deno.test("a SECURITY DEFINER function created after the migrations is executable by neither anon nor authenticated", async () => {
  await using db = await testDatabase();
  await assertNewDefinerRefused(db.sql, "probe_new_definer");
});

Deno.test("every function in public: anon and authenticated EXECUTE exactly as the allow-list says", async () => {
  await using db = await testDatabase();
  const { sql } = db;
  deepStrictEqual(await executeProblems(sql), []);
  // Trigger functions and the job queue are in public too, and nobody of the API calls them.
  const [{ n }] = await sql`
    select count(*)::int as n from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public'`;
  ok(n > Object.keys(executeAllowList).length, `only ${n} functions in public`);
  // The allow-list is what the app needs: writing a post as its author runs posts_hot_score.
  const a = await makeUser(sql, "alice");
  const [post] = await asUser(
    sql,
    a,
    (tx) => tx`insert into public.posts (author_id, body) values (${a}, 'hi') returning hot_score`,
  );
  ok(post.hot_score !== null, "hot_score was set by the trigger");
});

Deno.test("apply_likes (definer) keeps RLS's rule: others' drafts are neither liked, locked nor shown", async () => {
  await using db = await testDatabase();
  const { sql } = db;
  const a = await makeUser(sql, "alice");
  const b = await makeUser(sql, "bob");
  const [pub] =
    await sql`insert into public.posts (author_id, body) values (${a}, 'pub') returning id`;
  const [draft] =
    await sql`insert into public.posts (author_id, body, status) values (${a}, 'draft', 'draft') returning id`;
  const [own] =
    await sql`insert into public.posts (author_id, body, status) values (${b}, 'mine', 'draft') returning id`;

  const liked = await asUser(
    sql,
    b,
    (tx) =>
      tx`select id, like_count, liked_by_me from public.apply_likes(${[
        pub.id,
        draft.id,
        own.id,
      ]}::uuid[], ${[]}::uuid[]) order by id`,
  );
  deepStrictEqual(
    liked.map((r) => [r.id, r.like_count, r.liked_by_me]),
    [[pub.id, 1, true], [own.id, 1, true]].sort((x, y) => String(x[0]).localeCompare(String(y[0]))),
  );
  const [{ n }] =
    await sql`select count(*)::int as n from public.likes where post_id = ${draft.id}`;
  deepStrictEqual(n, 0);
  // While B's batch holds its row locks, A's draft stays unlocked.
  await asUser(sql, b, async (tx) => {
    await tx`select * from public.apply_likes(${[draft.id, pub.id]}::uuid[], ${[]}::uuid[])`;
    const free = await sql`
      select id from public.posts where id = ${draft.id} for update skip locked`;
    deepStrictEqual(free.length, 1, "A's draft was locked by B");
  });
  const unliked = await asUser(
    sql,
    b,
    (tx) =>
      tx`select like_count, liked_by_me from public.apply_likes(${[]}::uuid[], ${[
        pub.id,
      ]}::uuid[])`,
  );
  deepStrictEqual(unliked.map((r) => [r.like_count, r.liked_by_me]), [[0, false]]);
});

Deno.test("on Supabase's own defaults (grant all), the migrations alone take the privileges away", async () => {
  const admin = adminUrl();
  const name = `rockout_t_lp_${crypto.randomUUID().slice(0, 8)}`;
  await createDatabase(admin, name);
  const url = databaseUrl(admin, name);
  try {
    await bootstrap(url);
    const sql = connect(url);
    try {
      // What a Supabase project has before our migrations run.
      await sql.unsafe(`
        alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
        alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
        alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
        alter default privileges grant execute on functions to public;`).simple();
      await migrate(url);
      deepStrictEqual(await dangerousTablePrivileges(sql), []);
      deepStrictEqual(await sequenceUpdates(sql), []);
      deepStrictEqual((await definerProblems(sql)).problems, []);
      deepStrictEqual(await executeProblems(sql), []);
      // A table created later by the same owner doesn't get them back.
      await sql`create table public.probe_later (id int primary key)`;
      deepStrictEqual(await dangerousTablePrivileges(sql), []);
      // Nor does a function: Supabase's `in schema public grant all on functions` is undone.
      await assertNewDefinerRefused(sql, "probe_later_definer");
    } finally {
      await sql.end();
    }
  } finally {
    await dropDatabase(admin, name);
  }
});
