-- Posts, with a time-invariant "hot" rank.

create table public.posts (
  id uuid primary key default gen_random_uuid(),
  author_id uuid not null references public.profiles (id) on delete cascade,
  body text not null constraint posts_body_length check (char_length(body) between 1 and 2000),
  media_url text constraint posts_media_url_length check (char_length(media_url) <= 2048),
  thumbnail_url text constraint posts_thumbnail_url_length check (char_length(thumbnail_url) <= 2048),
  status text not null default 'published'
    constraint posts_status_check check (status in ('draft', 'published', 'deleted')),
  like_count integer not null default 0 constraint posts_like_count_nonneg check (like_count >= 0),
  reply_count integer not null default 0 constraint posts_reply_count_nonneg check (reply_count >= 0),
  -- Maintained by posts_set_hot_score (see below); never written by clients.
  hot_score double precision not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on column public.posts.hot_score is
  'ln(1 + like_count + 2*reply_count) + epoch(created_at)/45000; time-invariant, so an index on it '
  'orders the "for you" feed without rescoring. Set by trigger posts_set_hot_score.';
comment on column public.posts.like_count is
  'Exact: maintained by the statement-level triggers on public.likes. Do not update it from endpoints.';

-- The hot rank. Immutable in fact (epoch of a timestamptz does not depend on
-- the session time zone), but extract() on timestamptz is marked stable, so
-- this cannot be a generated column: a BEFORE trigger keeps it current.
create or replace function public.posts_hot_score(p_like_count integer, p_reply_count integer, p_created_at timestamptz)
returns double precision
language sql
immutable
parallel safe
set search_path = ''
as $$
  select (ln(1 + greatest(p_like_count, 0) + 2 * greatest(p_reply_count, 0))
          + extract(epoch from p_created_at) / 45000.0)::double precision
$$;

create or replace function public.posts_set_hot_score()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.hot_score := public.posts_hot_score(new.like_count, new.reply_count, new.created_at);
  return new;
end;
$$;

create trigger posts_set_hot_score
  before insert or update of like_count, reply_count, created_at on public.posts
  for each row execute function public.posts_set_hot_score();

-- updated_at tracks content edits only (not counter changes).
create trigger posts_set_updated_at
  before update of body, media_url, thumbnail_url, status on public.posts
  for each row execute function public.set_updated_at();

-- Global newest-first (keyset (created_at, id)).
create index posts_published_recent_idx
  on public.posts (created_at desc, id desc) where status = 'published';
-- An author's timeline, and the per-followee probe of feed_following.
create index posts_author_published_recent_idx
  on public.posts (author_id, created_at desc, id desc) where status = 'published';
-- "For you": hot rank (keyset (hot_score, id)).
create index posts_published_hot_idx
  on public.posts (hot_score desc, id desc) where status = 'published';
-- Own posts of any status (drafts page), the RLS policy column and the FK.
create index posts_author_all_idx
  on public.posts (author_id, created_at desc, id desc);

alter table public.posts enable row level security;

create policy posts_select_published_anon on public.posts
  for select to anon
  using (status = 'published');

create policy posts_select_published_or_own on public.posts
  for select to authenticated
  using (status = 'published' or (select auth.uid()) = author_id);

create policy posts_insert_own on public.posts
  for insert to authenticated
  with check ((select auth.uid()) = author_id);

create policy posts_update_own on public.posts
  for update to authenticated
  using ((select auth.uid()) = author_id)
  with check ((select auth.uid()) = author_id);

-- Clients write content columns only: counters, hot_score and timestamps are
-- the database's (a client-chosen created_at or like_count would game the feeds).
-- Soft delete = update status to 'deleted'; no DELETE policy.
revoke insert, update on public.posts from anon, authenticated;
grant insert (id, author_id, body, media_url, thumbnail_url, status) on public.posts to authenticated;
grant update (body, media_url, thumbnail_url, status) on public.posts to authenticated;
