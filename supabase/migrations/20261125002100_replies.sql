-- Replies to posts, with an exact posts.reply_count and posts.replies_updated_at (the
-- version of a thread that thread summaries are computed for).

alter table public.posts add column replies_updated_at timestamptz;

comment on column public.posts.replies_updated_at is
  'When the set of replies last changed (strictly increasing per post); null until the first '
  'reply. Set by the replies triggers together with reply_count. Thread summaries are computed '
  'for one value of it.';

-- A reply is written by a user (author_id) or, later, by an AI persona (persona_id, no FK
-- yet: personas arrive with their own migration). Exactly one of the two is set.
create table public.replies (
  id uuid primary key default gen_random_uuid(),
  post_id uuid not null references public.posts (id) on delete cascade,
  author_id uuid references public.profiles (id) on delete cascade,
  persona_id uuid,
  body text not null constraint replies_body_length check (char_length(body) between 1 and 2000),
  -- Reserved for reply likes (no endpoint writes it yet); extractive summaries rank by it.
  like_count integer not null default 0 constraint replies_like_count_nonneg check (like_count >= 0),
  created_at timestamptz not null default now(),
  constraint replies_one_author check ((author_id is null) <> (persona_id is null))
);

comment on table public.replies is
  'Replies to a post, oldest first. author_id for people, persona_id for AI personas.';

-- The thread page keyset (oldest first): (created_at, id) > cursor within one post.
create index replies_post_page_idx on public.replies (post_id, created_at, id);
-- The author FK (cascades) and "my replies".
create index replies_author_idx on public.replies (author_id, created_at desc) where author_id is not null;

-- reply_count and replies_updated_at move together, in the statement that adds or removes
-- replies (statement-level triggers with transition tables, as for likes). The posts rows
-- are locked in id order, so multi-post statements cannot deadlock each other.
-- replies_updated_at is strictly increasing per post even when transactions commit out of
-- order (greatest(previous + 1 µs, clock)), so a summary's version is never reused.
-- SECURITY DEFINER: a replier may not update somebody else's post.
create or replace function public.replies_apply_count_delta()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    perform 1 from public.posts p
     where p.id in (select post_id from new_rows)
     order by p.id
     for no key update;
    update public.posts p
       set reply_count = p.reply_count + d.n,
           replies_updated_at = greatest(
             coalesce(p.replies_updated_at, '-infinity'::timestamptz) + interval '1 microsecond',
             pg_catalog.clock_timestamp())
      from (select post_id, count(*)::integer as n from new_rows group by post_id) d
     where p.id = d.post_id;
  elsif tg_op = 'DELETE' then
    perform 1 from public.posts p
     where p.id in (select post_id from old_rows)
     order by p.id
     for no key update;
    update public.posts p
       set reply_count = greatest(p.reply_count - d.n, 0),
           replies_updated_at = greatest(
             coalesce(p.replies_updated_at, '-infinity'::timestamptz) + interval '1 microsecond',
             pg_catalog.clock_timestamp())
      from (select post_id, count(*)::integer as n from old_rows group by post_id) d
     where p.id = d.post_id;
  end if;
  return null;
end;
$$;

revoke execute on function public.replies_apply_count_delta() from public, anon, authenticated;

create trigger replies_count_after_insert
  after insert on public.replies
  referencing new table as new_rows
  for each statement execute function public.replies_apply_count_delta();

create trigger replies_count_after_delete
  after delete on public.replies
  referencing old table as old_rows
  for each statement execute function public.replies_apply_count_delta();

alter table public.replies enable row level security;

-- Visible exactly when the post is (the posts policies decide: published, or your own).
create policy replies_select_visible_post on public.replies
  for select to anon, authenticated
  using (exists (select 1 from public.posts p where p.id = post_id));

-- People reply as themselves, to posts they can see (published, or their own) that are
-- not deleted. Persona replies are written by the service role.
create policy replies_insert_own on public.replies
  for insert to authenticated
  with check (
    (select auth.uid()) = author_id
    and persona_id is null
    and exists (select 1 from public.posts p where p.id = post_id and p.status <> 'deleted')
  );

create policy replies_delete_own on public.replies
  for delete to authenticated
  using ((select auth.uid()) = author_id);

-- Replies are immutable; counters and timestamps are the database's.
revoke insert, update on public.replies from anon, authenticated;
grant insert (post_id, author_id, body) on public.replies to authenticated;
