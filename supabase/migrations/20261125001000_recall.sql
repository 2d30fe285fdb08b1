-- Recall: a user's threads of "what is this song?" questions and the answers.
-- Only the owner sees or writes them (RLS). Messages carry their owner too
-- (user_id) so the policy is a plain column test, and a composite foreign key
-- (thread_id, user_id) → recall_threads (id, user_id) makes a message's owner
-- always its thread's owner (no writing into somebody else's thread).

create table public.recall_threads (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  title text not null default ''
    constraint recall_threads_title_length check (char_length(title) <= 200),
  status text not null default 'active'
    constraint recall_threads_status_check check (status in ('active', 'archived', 'deleted')),
  last_message_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint recall_threads_id_user_key unique (id, user_id)
);

comment on table public.recall_threads is
  'Recall conversations. Soft delete: status = ''deleted'' (never listed, never readable).';

create trigger recall_threads_set_updated_at
  before update of title, status on public.recall_threads
  for each row execute function public.set_updated_at();

create table public.recall_messages (
  id uuid primary key default gen_random_uuid(),
  thread_id uuid not null,
  user_id uuid not null,
  role text not null constraint recall_messages_role_check check (role in ('user', 'assistant')),
  type text not null
    constraint recall_messages_type_check check (type in ('text', 'audio', 'candidates', 'error')),
  content text not null default ''
    constraint recall_messages_content_length check (char_length(content) <= 4000),
  candidate_json jsonb,
  created_at timestamptz not null default now(),
  constraint recall_messages_thread_owner_fkey foreign key (thread_id, user_id)
    references public.recall_threads (id, user_id) on delete cascade
);

-- A thread's messages, newest first (keyset (created_at, id)); also the FK.
create index recall_messages_thread_recent_idx
  on public.recall_messages (thread_id, created_at desc, id desc);
-- A user's threads by recent activity (keyset (last_message_at, id)); the policy column.
create index recall_threads_user_recent_idx
  on public.recall_threads (user_id, last_message_at desc, id desc);
-- The list users see: active threads only.
create index recall_threads_user_active_idx
  on public.recall_threads (user_id, last_message_at desc, id desc) where status = 'active';
-- Messages by type (e.g. error rates, audio share) and the RLS policy column.
create index recall_messages_type_idx on public.recall_messages (type, created_at desc);
create index recall_messages_user_idx on public.recall_messages (user_id);
-- Which answers named a song (candidate_json @> '{"candidates": [{"song_id": …}]}').
create index recall_messages_candidates_gin_idx
  on public.recall_messages using gin (candidate_json jsonb_path_ops);

alter table public.recall_threads enable row level security;
alter table public.recall_messages enable row level security;

create policy recall_threads_select_own on public.recall_threads
  for select to authenticated
  using ((select auth.uid()) = user_id);

create policy recall_threads_insert_own on public.recall_threads
  for insert to authenticated
  with check ((select auth.uid()) = user_id);

create policy recall_threads_update_own on public.recall_threads
  for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);

create policy recall_messages_select_own on public.recall_messages
  for select to authenticated
  using ((select auth.uid()) = user_id);

create policy recall_messages_insert_own on public.recall_messages
  for insert to authenticated
  with check ((select auth.uid()) = user_id);

-- Soft delete only (no DELETE policy); clients never choose ids or timestamps
-- other than through the RPCs below.
revoke all on public.recall_threads, public.recall_messages from anon;
revoke insert, update, delete on public.recall_threads, public.recall_messages from authenticated;
grant select on public.recall_threads, public.recall_messages to authenticated;
grant insert (user_id, title, last_message_at) on public.recall_threads to authenticated;
grant update (title, status, last_message_at) on public.recall_threads to authenticated;
grant insert (thread_id, user_id, role, type, content, candidate_json, created_at)
  on public.recall_messages to authenticated;

-- A page of auth.uid()'s active threads, most recently active first.
-- Cursor: (last_message_at, id) of the last row; cursor_key = last_message_at::text.
-- Coalesces sit in scalar sub-selects so the row comparison stays an index
-- condition under RLS (see 20261125000500_feed_rpcs.sql).
create or replace function public.get_recall_threads_paginated(
  p_limit integer,
  p_before_last_message_at timestamptz default null,
  p_before_id uuid default null
)
returns table (
  id uuid,
  title text,
  status text,
  last_message_at timestamptz,
  created_at timestamptz,
  cursor_key text
)
language sql
stable
security invoker
set search_path = ''
set "DateStyle" = 'ISO, MDY'
as $$
  select t.id, t.title, t.status, t.last_message_at, t.created_at, t.last_message_at::text
  from public.recall_threads t
  where t.user_id = (select auth.uid())
    and t.status = 'active'
    and (t.last_message_at, t.id) < (
      (select coalesce(p_before_last_message_at, 'infinity'::timestamptz)),
      (select coalesce(p_before_id, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid))
    )
  order by t.last_message_at desc, t.id desc
  limit p_limit
$$;

-- A page of one thread's messages, newest first, in one statement. No row at
-- all: the thread is not visible (unknown, somebody else's, or deleted). One
-- row with a null id: the thread exists but has no (more) messages.
create or replace function public.get_recall_messages_paginated(
  p_thread_id uuid,
  p_before_created_at timestamptz default null,
  p_before_id uuid default null,
  p_limit integer default 50
)
returns table (
  id uuid,
  thread_id uuid,
  role text,
  type text,
  content text,
  candidate_json jsonb,
  created_at timestamptz,
  cursor_key text
)
language sql
stable
security invoker
set search_path = ''
set "DateStyle" = 'ISO, MDY'
as $$
  select m.id, t.id, m.role, m.type, m.content, m.candidate_json, m.created_at, m.created_at::text
  from public.recall_threads t
  left join lateral (
    select m.*
    from public.recall_messages m
    where m.thread_id = t.id
      and (m.created_at, m.id) < (
        (select coalesce(p_before_created_at, 'infinity'::timestamptz)),
        (select coalesce(p_before_id, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid))
      )
    order by m.created_at desc, m.id desc
    limit p_limit
  ) m on true
  where t.id = p_thread_id
    and t.status <> 'deleted'
  order by m.created_at desc, m.id desc
$$;

-- The user's question and the assistant's answer, in one statement: starts a
-- thread when p_thread_id is null, else bumps last_message_at of the caller's
-- (not deleted) thread, and inserts both messages. No row: the thread is not
-- the caller's (or was deleted meanwhile). The answer is stamped one
-- microsecond after the question so "newest first" never shows it before it.
create or replace function public.insert_recall_messages_batch(
  p_thread_id uuid,
  p_title text,
  p_user_type text,
  p_user_content text,
  p_assistant_type text,
  p_assistant_content text,
  p_candidate_json jsonb
)
returns table (thread_id uuid, user_message_id uuid, assistant_message_id uuid, created boolean)
language sql
volatile
security invoker
set search_path = ''
as $$
  with new_thread as (
    insert into public.recall_threads (user_id, title, last_message_at)
    select (select auth.uid()), left(coalesce(p_title, ''), 200), now() + interval '1 microsecond'
    where p_thread_id is null
    returning id
  ), bumped as (
    update public.recall_threads t
    set last_message_at = now() + interval '1 microsecond'
    where p_thread_id is not null
      and t.id = p_thread_id
      and t.user_id = (select auth.uid())
      and t.status <> 'deleted'
    returning t.id
  ), thread as (
    select id, true as created from new_thread
    union all
    select id, false from bumped
  ), inserted as (
    insert into public.recall_messages
      (thread_id, user_id, role, type, content, candidate_json, created_at)
    select thread.id, (select auth.uid()), m.role, m.type, m.content, m.candidate_json, m.at
    from thread
    cross join (values
      ('user', p_user_type, p_user_content, null::jsonb, now()),
      ('assistant', p_assistant_type, p_assistant_content, p_candidate_json,
        now() + interval '1 microsecond')
    ) as m (role, type, content, candidate_json, at)
    returning id, role, recall_messages.thread_id
  )
  select i.thread_id,
    (array_agg(i.id) filter (where i.role = 'user'))[1],
    (array_agg(i.id) filter (where i.role = 'assistant'))[1],
    bool_or(thread.created)
  from inserted i
  join thread on thread.id = i.thread_id
  group by i.thread_id
$$;

revoke execute on function public.get_recall_threads_paginated(integer, timestamptz, uuid)
  from public, anon;
revoke execute on function public.get_recall_messages_paginated(uuid, timestamptz, uuid, integer)
  from public, anon;
revoke execute on function public.insert_recall_messages_batch(uuid, text, text, text, text, text, jsonb)
  from public, anon;
grant execute on function public.get_recall_threads_paginated(integer, timestamptz, uuid)
  to authenticated, service_role;
grant execute on function public.get_recall_messages_paginated(uuid, timestamptz, uuid, integer)
  to authenticated, service_role;
grant execute on function public.insert_recall_messages_batch(uuid, text, text, text, text, text, jsonb)
  to authenticated, service_role;
