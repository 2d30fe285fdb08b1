-- Likes, with an exact posts.like_count.

create table public.likes (
  user_id uuid not null references public.profiles (id) on delete cascade,
  post_id uuid not null references public.posts (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (user_id, post_id)
);

-- "Who liked this post" and the FK cascade from posts.
create index likes_post_id_idx on public.likes (post_id, created_at desc);

-- like_count is maintained HERE, not by endpoints: an endpoint just inserts or
-- deletes its likes row (insert ... on conflict do nothing / delete) and must
-- NOT also touch posts.like_count (it couldn't: API roles have no UPDATE
-- privilege on that column). Statement-level triggers with transition tables
-- add the per-post delta of each statement in one UPDATE, so bulk inserts
-- (seeding) cost one UPDATE per statement, and `like_count = like_count + n`
-- under READ COMMITTED re-reads the locked row, so concurrent likes never lose
-- an increment. Only rows actually inserted/deleted are counted (ON CONFLICT
-- DO NOTHING and no-op deletes add 0). SECURITY DEFINER because the liker may
-- not update someone else's post under RLS.
create or replace function public.likes_apply_count_delta()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    update public.posts p
       set like_count = p.like_count + d.n
      from (select post_id, count(*)::integer as n from new_rows group by post_id) d
     where p.id = d.post_id;
  elsif tg_op = 'DELETE' then
    update public.posts p
       set like_count = greatest(p.like_count - d.n, 0)
      from (select post_id, count(*)::integer as n from old_rows group by post_id) d
     where p.id = d.post_id;
  end if;
  return null;
end;
$$;

revoke execute on function public.likes_apply_count_delta() from public, anon, authenticated;

create trigger likes_count_after_insert
  after insert on public.likes
  referencing new table as new_rows
  for each statement execute function public.likes_apply_count_delta();

create trigger likes_count_after_delete
  after delete on public.likes
  referencing old table as old_rows
  for each statement execute function public.likes_apply_count_delta();

alter table public.likes enable row level security;

create policy likes_select_authenticated on public.likes
  for select to authenticated
  using (true);

-- Only as yourself, and only posts you can see (published, or your own).
create policy likes_insert_own on public.likes
  for insert to authenticated
  with check (
    (select auth.uid()) = user_id
    and exists (select 1 from public.posts p where p.id = post_id)
  );

create policy likes_delete_own on public.likes
  for delete to authenticated
  using ((select auth.uid()) = user_id);

revoke insert, update on public.likes from anon, authenticated;
grant insert (user_id, post_id) on public.likes to authenticated;
