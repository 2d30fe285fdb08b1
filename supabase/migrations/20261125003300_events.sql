-- Analytics events, append-only. Clients insert through the events function (as
-- themselves, or anon); nobody reads them through the API. No foreign key to users:
-- ingestion must stay one cheap multi-row insert, and history outlives accounts.

create table public.events (
  id bigint generated always as identity primary key,
  -- The sender, when signed in; null for anonymous senders.
  user_id uuid,
  -- A client-chosen device/session id for anonymous analytics (never the IP).
  anonymous_id text
    constraint events_anonymous_id_format check (anonymous_id ~ '^[A-Za-z0-9_-]{1,64}$'),
  name text not null
    constraint events_name_format
    check (name ~ '^[a-z][a-z0-9_]{0,63}(\.[a-z][a-z0-9_]{0,63}){0,3}$'),
  properties jsonb not null default '{}'::jsonb
    constraint events_properties_object check (jsonb_typeof(properties) = 'object'),
  occurred_at timestamptz not null default now(),
  received_at timestamptz not null default now()
);

-- "What did this user do, recently first".
create index events_user_time_idx
  on public.events (user_id, occurred_at desc) where user_id is not null;
-- "How often did this happen over time" (per event name).
create index events_name_time_idx on public.events (name, occurred_at desc);

alter table public.events enable row level security;

-- Write-only for the API roles: as yourself when signed in, anonymous otherwise.
create policy events_insert_own on public.events
  for insert to authenticated
  with check ((select auth.uid()) = user_id);

create policy events_insert_anon on public.events
  for insert to anon
  with check (user_id is null);

revoke all on public.events from anon, authenticated;
grant insert (user_id, anonymous_id, name, properties, occurred_at)
  on public.events to anon, authenticated;
