-- rockout-edge bootstrap: makes a plain Postgres (15–18) look like a Supabase
-- database for what our migrations rely on. NOT a migration: run it before
-- `supabase migration up` on local/test databases (scripts/dev/db.ts bootstrap()).
--
-- Idempotent, and harmless on a real Supabase database: every object is only
-- created when missing (on Supabase the roles, the auth schema, auth.users and
-- the auth.* functions already exist and belong to supabase_auth_admin, so we
-- never replace them), and the grants below are the ones Supabase already has.

-- Roles ---------------------------------------------------------------------
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

-- Let the current (migration/app) user `set role` to the API roles, as
-- Supabase's `postgres`/`authenticator` can. Superusers need no membership.
do $$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated', 'service_role'] loop
    if not pg_catalog.pg_has_role(current_user, r, 'member') then
      execute pg_catalog.format('grant %I to %I', r, current_user);
    end if;
  end loop;
end
$$;

-- Schemas -------------------------------------------------------------------
create schema if not exists auth;
create schema if not exists extensions;

-- auth.users (a small Supabase-like subset; the real table has many more columns)
create table if not exists auth.users (
  id uuid primary key,
  email text,
  raw_user_meta_data jsonb,
  raw_app_meta_data jsonb,
  role text,
  aud text,
  email_confirmed_at timestamptz,
  created_at timestamptz default now(),
  updated_at timestamptz default now()
);

-- auth.uid() / auth.role() / auth.jwt(), as Supabase defines them: they read
-- the settings PostgREST (and our db layer) set per transaction.
do $$
begin
  if not exists (
    select from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'auth' and p.proname = 'uid'
  ) then
    create function auth.uid() returns uuid
    language sql stable
    as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
      )::uuid
    $f$;
  end if;

  if not exists (
    select from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'auth' and p.proname = 'role'
  ) then
    create function auth.role() returns text
    language sql stable
    as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
      )::text
    $f$;
  end if;

  if not exists (
    select from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'auth' and p.proname = 'jwt'
  ) then
    create function auth.jwt() returns jsonb
    language sql stable
    as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
      )::jsonb
    $f$;
  end if;
end
$$;

-- Extensions ----------------------------------------------------------------
-- pg_trgm lives in `extensions` on Supabase. Skip quietly when the server
-- doesn't ship it, or when it is already installed (in any schema).
do $$
begin
  if not exists (select from pg_catalog.pg_extension where extname = 'pg_trgm')
     and exists (select from pg_catalog.pg_available_extensions where name = 'pg_trgm') then
    begin
      create extension if not exists pg_trgm with schema extensions;
    exception when others then
      raise notice 'bootstrap: pg_trgm not installed: %', sqlerrm;
    end;
  end if;
end
$$;

-- Grants (Supabase's defaults, least privilege; RLS is what protects rows). Only
-- default privileges for public: existing tables' grants are never touched.
grant usage on schema public to anon, authenticated, service_role;
grant usage on schema auth to anon, authenticated, service_role;
grant usage on schema extensions to anon, authenticated, service_role;

do $$
begin
  -- Only touch the auth functions when we own them (plain Postgres); on
  -- Supabase they belong to supabase_auth_admin and are already granted.
  if pg_catalog.pg_has_role(current_user, (
    select p.proowner from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'auth' and p.proname = 'uid' limit 1
  ), 'usage') then
    grant execute on function auth.uid(), auth.role(), auth.jwt()
      to anon, authenticated, service_role;
  end if;
end
$$;

-- Supabase grants ALL to the three API roles; anon and authenticated keep the same defaults
-- minus what no client needs: TRUNCATE (it skips RLS), TRIGGER, REFERENCES, and UPDATE on
-- sequences (setval), and EXECUTE on functions (each RPC is granted by its migration, to the
-- roles that call it). The revokes make a re-run fix a database bootstrapped with the old
-- `grant all`; migrations 20261128000100_least_privilege and 20261128000400_function_execute_
-- allowlist do the same on Supabase.
alter default privileges in schema public grant all on tables to service_role;
alter default privileges in schema public grant all on sequences to service_role;
alter default privileges in schema public grant select, insert, update, delete on tables to anon, authenticated;
alter default privileges in schema public grant usage, select on sequences to anon, authenticated;
alter default privileges in schema public grant execute on functions to service_role;
alter default privileges in schema public revoke execute on functions from anon, authenticated;
alter default privileges in schema public revoke truncate, trigger, references on tables from anon, authenticated;
alter default privileges in schema public revoke update on sequences from anon, authenticated;
-- Functions are executable by PUBLIC unless revoked; a per-schema default can't revoke it.
alter default privileges revoke execute on functions from public;
