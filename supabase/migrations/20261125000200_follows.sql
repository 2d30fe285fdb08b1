-- Follows: follower_id follows followee_id.

create table public.follows (
  follower_id uuid not null references public.profiles (id) on delete cascade,
  followee_id uuid not null references public.profiles (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (follower_id, followee_id),
  constraint follows_no_self_follow check (follower_id <> followee_id)
);

-- "Who follows X" (followers page) keyset: (created_at, follower_id) < cursor.
create index follows_followee_page_idx
  on public.follows (followee_id, created_at desc, follower_id desc);
-- "Who does X follow" (following page) keyset: (created_at, followee_id) < cursor.
-- Also serves the feed (follower_id = auth.uid()) and the RLS policy column.
create index follows_follower_page_idx
  on public.follows (follower_id, created_at desc, followee_id desc);

alter table public.follows enable row level security;

create policy follows_select_authenticated on public.follows
  for select to authenticated
  using (true);

create policy follows_insert_own on public.follows
  for insert to authenticated
  with check ((select auth.uid()) = follower_id);

create policy follows_delete_own on public.follows
  for delete to authenticated
  using ((select auth.uid()) = follower_id);

-- Follows are immutable: insert or delete, never update.
revoke update on public.follows from anon, authenticated;
revoke insert on public.follows from anon, authenticated;
grant insert (follower_id, followee_id) on public.follows to authenticated;
