-- Least privilege for the API roles (issue 10).
--
-- 1. Supabase's default privileges give anon and authenticated ALL on every new table in
--    public, which includes TRUNCATE (no RLS check: `truncate public.likes` as
--    authenticated emptied the table), TRIGGER and REFERENCES, and UPDATE on sequences
--    (setval: a caller could rewind events' identity and make every later insert collide).
--    None of our endpoints needs them. Revoked on what exists and in the default privileges,
--    so tables added by later migrations don't get them back.
-- 2. Every SECURITY DEFINER function runs with `search_path = ''` and is executable only by
--    the roles that call it. lock_posts_for_counters was definer and executable by
--    authenticated, so any user could lock any post row (`for no key update`) for as long
--    as their transaction lasted; it is folded into apply_likes, which is now the one
--    definer entry point and re-states RLS's visibility rule itself.
-- 3. Functions are executable by PUBLIC by default: revoked in the default privileges, so a
--    new definer function is callable by nobody until a migration grants it.
--
-- Runs unchanged on Supabase (migrations run as `postgres`, which owns our objects and whose
-- default privileges are the ones Supabase sets for `public`) and on plain Postgres (the
-- bootstrap grants the same defaults as the migration user).

-- 1. Tables and sequences ------------------------------------------------------------------
revoke truncate, trigger, references on all tables in schema public from anon, authenticated;
revoke update on all sequences in schema public from anon, authenticated;

-- Default privileges of the migration user (postgres on Supabase), and of postgres when the
-- migration user may act for it (Supabase's dashboard also creates objects as postgres).
do $$
declare
  owner_role text;
begin
  foreach owner_role in array array[current_user::text, 'postgres'] loop
    continue when not exists (select from pg_catalog.pg_roles where rolname = owner_role)
      or not pg_catalog.pg_has_role(current_user, owner_role, 'member');
    execute pg_catalog.format(
      'alter default privileges for role %I in schema public
         revoke truncate, trigger, references on tables from anon, authenticated', owner_role);
    execute pg_catalog.format(
      'alter default privileges for role %I in schema public
         revoke update on sequences from anon, authenticated', owner_role);
    -- Global (no schema): a per-schema default can't take back PUBLIC's built-in EXECUTE.
    execute pg_catalog.format(
      'alter default privileges for role %I revoke execute on functions from public', owner_role);
  end loop;
end
$$;

-- 2. SECURITY DEFINER functions -------------------------------------------------------------

-- Likes p_like and unlikes p_unlike as auth.uid(), in one call, and answers the resulting
-- counts. SECURITY DEFINER so it can lock the posts' rows up front, in id order (two batches
-- touching the same posts in different orders then wait instead of deadlocking); an invoker
-- may only lock rows it may update. Because RLS doesn't apply to the owner, the function
-- states the visibility rule of posts_select_published_or_own itself: a post is liked,
-- locked or answered only when it is published or the caller's own. Unlikes touch only the
-- caller's own likes rows.
create or replace function public.apply_likes(p_like uuid[], p_unlike uuid[])
returns table (id uuid, like_count integer, liked_by_me boolean)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  uid uuid := (select auth.uid());
  touched uuid[] := coalesce(p_like, '{}') || coalesce(p_unlike, '{}');
begin
  if uid is null then
    raise exception 'apply_likes needs a user' using errcode = '42501';
  end if;

  perform 1 from public.posts p
   where p.id = any (touched)
     and (p.status = 'published' or p.author_id = uid)
   order by p.id
   for no key update;

  insert into public.likes (user_id, post_id)
  select uid, p.id from public.posts p
   where p.id = any (p_like)
     and (p.status = 'published' or p.author_id = uid)
  on conflict do nothing;

  delete from public.likes l where l.user_id = uid and l.post_id = any (p_unlike);

  return query
    select p.id, p.like_count,
           exists (select 1 from public.likes l where l.user_id = uid and l.post_id = p.id)
    from public.posts p
    where p.id = any (touched)
      and (p.status = 'published' or p.author_id = uid);
end;
$$;

revoke execute on function public.apply_likes(uuid[], uuid[]) from public, anon, service_role;
grant execute on function public.apply_likes(uuid[], uuid[]) to authenticated;

drop function if exists public.lock_posts_for_counters(uuid[]);

-- The counter triggers' functions: only the trigger machinery runs them (firing a trigger
-- needs no EXECUTE), so nobody gets EXECUTE. Re-stated for every definer function in
-- public, whatever migration made it, so a grant from the old defaults can't linger.
do $$
declare
  fn regprocedure;
begin
  for fn in
    select p.oid::regprocedure
      from pg_catalog.pg_proc p
      join pg_catalog.pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public' and p.prosecdef
       and p.oid <> 'public.apply_likes(uuid[], uuid[])'::regprocedure
  loop
    execute pg_catalog.format('revoke execute on function %s from public, anon, authenticated, service_role', fn);
    execute pg_catalog.format('alter function %s set search_path = %L', fn, '');
  end loop;
end
$$;
