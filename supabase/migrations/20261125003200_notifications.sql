-- Notifications: what happened for a user (persona replies to their posts, daily
-- digests, …). Written by background jobs (the database owner); read and marked read
-- by their owner through the notifications function.

create table public.notifications (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.profiles (id) on delete cascade,
  kind text not null
    constraint notifications_kind_format check (kind ~ '^[a-z][a-z0-9_]{0,63}$'),
  payload jsonb not null default '{}'::jsonb,
  -- Makes the writers idempotent: a job that runs twice inserts one notification
  -- (e.g. persona_reply:<reply id>, digest:<day>).
  dedupe_key text constraint notifications_dedupe_key_length check (char_length(dedupe_key) <= 200),
  read_at timestamptz,
  created_at timestamptz not null default now()
);

-- The list, newest first (keyset (created_at, id)); also the RLS policy column and the FK.
create index notifications_user_page_idx
  on public.notifications (user_id, created_at desc, id desc);
-- The unread count: only unread rows are in it.
create index notifications_user_unread_idx
  on public.notifications (user_id) where read_at is null;
-- Idempotent inserts (ON CONFLICT (user_id, dedupe_key) DO NOTHING).
create unique index notifications_dedupe_idx
  on public.notifications (user_id, dedupe_key) where dedupe_key is not null;

alter table public.notifications enable row level security;

create policy notifications_select_own on public.notifications
  for select to authenticated
  using ((select auth.uid()) = user_id);

create policy notifications_update_own on public.notifications
  for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);

-- Owners may only mark read; rows are created by the worker.
revoke all on public.notifications from anon, authenticated;
grant select on public.notifications to authenticated;
grant update (read_at) on public.notifications to authenticated;
