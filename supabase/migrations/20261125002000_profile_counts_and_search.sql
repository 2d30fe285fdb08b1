-- Profiles: exact follower/following counts, and indexes for profile search.

-- Counters ------------------------------------------------------------------
alter table public.profiles
  add column follower_count integer not null default 0
    constraint profiles_follower_count_nonneg check (follower_count >= 0),
  add column following_count integer not null default 0
    constraint profiles_following_count_nonneg check (following_count >= 0);

comment on column public.profiles.follower_count is
  'Exact: maintained by the statement-level triggers on public.follows. Never written by endpoints.';
comment on column public.profiles.following_count is
  'Exact: maintained by the statement-level triggers on public.follows. Never written by endpoints.';

-- updated_at tracks what the owner edits, not counter changes (it was "any update").
drop trigger profiles_set_updated_at on public.profiles;
create trigger profiles_set_updated_at
  before update of username, display_name, avatar_url, bio on public.profiles
  for each row execute function public.set_updated_at();

update public.profiles p
   set follower_count = coalesce((select count(*) from public.follows f where f.followee_id = p.id), 0),
       following_count = coalesce((select count(*) from public.follows f where f.follower_id = p.id), 0);

-- One statement's follows change two counters per row (the follower's following_count and
-- the followee's follower_count). The rows are locked in id order first: without that, A
-- following B while B follows A would lock the same two rows in opposite orders and
-- deadlock. `count = count + n` re-reads the locked row under READ COMMITTED, so concurrent
-- follows never lose an increment; only rows really inserted/deleted are in the transition
-- tables (ON CONFLICT DO NOTHING and no-op deletes count 0). SECURITY DEFINER: a follower
-- may not update somebody else's profile.
create or replace function public.follows_apply_count_delta()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    perform 1 from public.profiles p
     where p.id in (select followee_id from new_rows union select follower_id from new_rows)
     order by p.id
     for no key update;
    update public.profiles p
       set follower_count = p.follower_count + d.followers,
           following_count = p.following_count + d.following
      from (
        select id, sum(followers)::integer as followers, sum(following)::integer as following
        from (
          select followee_id as id, 1 as followers, 0 as following from new_rows
          union all
          select follower_id, 0, 1 from new_rows
        ) e
        group by id
      ) d
     where p.id = d.id;
  elsif tg_op = 'DELETE' then
    perform 1 from public.profiles p
     where p.id in (select followee_id from old_rows union select follower_id from old_rows)
     order by p.id
     for no key update;
    update public.profiles p
       set follower_count = greatest(p.follower_count - d.followers, 0),
           following_count = greatest(p.following_count - d.following, 0)
      from (
        select id, sum(followers)::integer as followers, sum(following)::integer as following
        from (
          select followee_id as id, 1 as followers, 0 as following from old_rows
          union all
          select follower_id, 0, 1 from old_rows
        ) e
        group by id
      ) d
     where p.id = d.id;
  end if;
  return null;
end;
$$;

revoke execute on function public.follows_apply_count_delta() from public, anon, authenticated;

create trigger follows_count_after_insert
  after insert on public.follows
  referencing new table as new_rows
  for each statement execute function public.follows_apply_count_delta();

create trigger follows_count_after_delete
  after delete on public.follows
  referencing old table as old_rows
  for each statement execute function public.follows_apply_count_delta();

-- Search --------------------------------------------------------------------
-- pg_trgm lives in `extensions` (Supabase; scripts/bootstrap.sql on plain Postgres).
create extension if not exists pg_trgm with schema extensions;

-- Word-prefix full text over display name and username ('simple': names are not prose).
alter table public.profiles
  add column search_tsv tsvector generated always as (
    to_tsvector('simple'::regconfig,
      coalesce(display_name, '') || ' ' || replace(username, '_', ' ') || ' ' || username)
  ) stored;

create index profiles_search_tsv_idx on public.profiles using gin (search_tsv);
-- Username prefix (`like 'q%'`): the unique index uses the default collation, which LIKE
-- cannot use for prefixes.
create index profiles_username_prefix_idx on public.profiles (username text_pattern_ops);
-- Typo tolerance (`q <% username`, `q <% display_name`: word similarity).
create index profiles_username_trgm_idx
  on public.profiles using gin (username extensions.gin_trgm_ops);
create index profiles_display_name_trgm_idx
  on public.profiles using gin (display_name extensions.gin_trgm_ops);
