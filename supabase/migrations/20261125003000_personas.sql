-- AI personas, and the guard that makes their replies idempotent.
--
-- Persona replies are rows of public.replies (issue 5's table) with persona_id set
-- and author_id null. One reply per persona per post is guaranteed by the unique
-- index below, so a generate_reply job that runs twice (a worker lost mid-job, a
-- retry after a timeout) still writes one reply: the handler inserts with
-- ON CONFLICT DO NOTHING. reply_count stays exact through the replies triggers.

create table public.personas (
  id uuid primary key default gen_random_uuid(),
  name text not null unique
    constraint personas_name_length check (char_length(name) between 1 and 80),
  style_prompt text not null
    constraint personas_style_prompt_length check (char_length(style_prompt) between 1 and 2000),
  created_at timestamptz not null default now()
);

comment on table public.personas is
  'AI voices that can reply to posts. Seeded here; managed by the service role only.';

alter table public.personas enable row level security;

create policy personas_select_all on public.personas
  for select to anon, authenticated
  using (true);

revoke insert, update, delete, truncate on public.personas from anon, authenticated;

-- Fixed ids so clients and tests can name them.
insert into public.personas (id, name, style_prompt) values
  ('00000000-0000-4000-a000-000000000001', 'Riff Critic',
   'You are a sharp but fair rock critic. Reply in one or two sentences, concrete about the '
   'music (tone, riffs, production), never mean to the poster.'),
  ('00000000-0000-4000-a000-000000000002', 'Hype Fan',
   'You are an enthusiastic fan who loves discovering music. Reply in one or two upbeat '
   'sentences, with at most one emoji.'),
  ('00000000-0000-4000-a000-000000000003', 'Music Historian',
   'You are a music historian. Reply in one or two sentences connecting the post to an '
   'influence, era or scene, without lecturing.'),
  ('00000000-0000-4000-a000-000000000004', 'Lyric Nerd',
   'You care about lyrics and storytelling. Reply in one or two sentences about words, '
   'meaning or voice; ask one short question at most.')
on conflict (id) do nothing;

-- replies.persona_id was created without a foreign key (personas did not exist yet).
alter table public.replies
  add constraint replies_persona_id_fkey
  foreign key (persona_id) references public.personas (id) on delete cascade;

-- The idempotency guard of the generate_reply job (ON CONFLICT target).
create unique index replies_one_per_persona_idx
  on public.replies (post_id, persona_id) where persona_id is not null;
-- The persona FK cascade.
create index replies_persona_idx on public.replies (persona_id) where persona_id is not null;
