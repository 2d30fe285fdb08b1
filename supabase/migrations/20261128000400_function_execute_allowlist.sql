-- EXECUTE on public functions: nobody among the API roles but by explicit grant (issue 10).
--
-- 20261128000100 took EXECUTE away from PUBLIC, but Supabase's per-schema default privileges
-- (`alter default privileges in schema public grant all on functions to anon, authenticated,
-- service_role`) still granted it to anon and authenticated: a SECURITY DEFINER function
-- created later was callable by any visitor (`set role anon; select public.f()` answered).
--
-- 1. The default privileges of the migration user (postgres on Supabase), and of postgres when
--    the migration user may act for it, no longer grant EXECUTE on new functions to anon or
--    authenticated: a new function is callable by them only once a migration grants it.
--    service_role (the secret key) keeps its defaults.
-- 2. Every function of ours in public: EXECUTE revoked from anon and authenticated, then
--    granted on exactly what each role calls. Functions belonging to an extension, or owned by
--    a role we can't act for (Supabase's own), are left alone.
--
-- Who calls what (asUser(null) runs as anon, asUser(user) as authenticated):
--   anon:          feed_for_you (the shared "for you" page), search_songs and match_songs
--                  (recall-resolve's catalog). Invoker functions over public rows (RLS
--                  applies): a signed-in caller may read what a signed-out one may, so
--                  authenticated gets them too.
--   authenticated: the three above, feed_following, liked_post_ids, apply_likes, set_follow, search_profiles,
--                  get_recall_threads_paginated, get_recall_messages_paginated,
--                  insert_recall_messages_batch, and posts_hot_score: the invoker trigger
--                  posts_set_hot_score calls it when a user writes their post.
--   nobody:        trigger functions (firing a trigger checks no EXECUTE), the counter
--                  triggers (definer), and the job queue (the worker's own connection).
-- RLS policies call only auth.uid(), which lives in auth and keeps its grants.
--
-- Runs unchanged on Supabase and on plain Postgres (scripts/bootstrap.sql grants the same
-- defaults as Supabase minus these).

-- 1. Default privileges ---------------------------------------------------------------------
do $$
declare
  owner_role text;
begin
  foreach owner_role in array array[current_user::text, 'postgres'] loop
    continue when not exists (select from pg_catalog.pg_roles where rolname = owner_role)
      or not pg_catalog.pg_has_role(current_user, owner_role, 'member');
    -- Per schema: takes back Supabase's `in schema public grant all on functions`.
    execute pg_catalog.format(
      'alter default privileges for role %I in schema public
         revoke execute on functions from anon, authenticated', owner_role);
    -- Global: in case a global default granted it too (a no-op otherwise).
    execute pg_catalog.format(
      'alter default privileges for role %I revoke execute on functions from anon, authenticated',
      owner_role);
  end loop;
end
$$;

-- 2. Existing functions ---------------------------------------------------------------------
do $$
declare
  fn regprocedure;
begin
  for fn in
    select p.oid::regprocedure
      from pg_catalog.pg_proc p
      join pg_catalog.pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public'
       and pg_catalog.pg_has_role(current_user, p.proowner, 'usage')
       and not exists (
         select from pg_catalog.pg_depend d
          where d.classid = 'pg_catalog.pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
  loop
    execute pg_catalog.format('revoke execute on function %s from public, anon, authenticated', fn);
  end loop;
end
$$;

grant execute on function public.feed_for_you(integer, double precision, uuid)
  to anon, authenticated;
grant execute on function public.search_songs(text, integer) to anon, authenticated;
grant execute on function public.match_songs(text[], text[]) to anon, authenticated;

grant execute on function public.feed_following(integer, timestamptz, uuid) to authenticated;
grant execute on function public.liked_post_ids(uuid[]) to authenticated;
grant execute on function public.apply_likes(uuid[], uuid[]) to authenticated;
grant execute on function public.set_follow(uuid, boolean) to authenticated;
grant execute on function public.search_profiles(text, text, integer) to authenticated;
grant execute on function public.get_recall_threads_paginated(integer, timestamptz, uuid)
  to authenticated;
grant execute on function public.get_recall_messages_paginated(uuid, timestamptz, uuid, integer)
  to authenticated;
grant execute on function public.insert_recall_messages_batch(uuid, text, text, text, text, text, jsonb)
  to authenticated;
grant execute on function public.posts_hot_score(integer, integer, timestamptz) to authenticated;
