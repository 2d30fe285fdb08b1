-- Profiles: one row per auth user (public, readable by everyone).

-- Generic updated_at trigger function (reused by later tables).
create or replace function public.set_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end;
$$;

create table public.profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  username text not null unique
    constraint profiles_username_format check (username ~ '^[a-z0-9_]{3,30}$'),
  display_name text constraint profiles_display_name_length check (char_length(display_name) <= 80),
  avatar_url text constraint profiles_avatar_url_length check (char_length(avatar_url) <= 2048),
  bio text constraint profiles_bio_length check (char_length(bio) <= 500),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table public.profiles is 'Public user profiles; id = auth.users.id.';

create trigger profiles_set_updated_at
  before update on public.profiles
  for each row execute function public.set_updated_at();

alter table public.profiles enable row level security;

create policy profiles_select_all on public.profiles
  for select to anon, authenticated
  using (true);

create policy profiles_insert_own on public.profiles
  for insert to authenticated
  with check ((select auth.uid()) = id);

create policy profiles_update_own on public.profiles
  for update to authenticated
  using ((select auth.uid()) = id)
  with check ((select auth.uid()) = id);

-- API roles may only write the user-editable columns (id/timestamps are ours).
revoke insert, update on public.profiles from anon, authenticated;
grant insert (id, username, display_name, avatar_url, bio) on public.profiles to authenticated;
grant update (username, display_name, avatar_url, bio) on public.profiles to authenticated;
