-- RPCs of the social endpoints: batched likes, follow/unfollow, profile search. Security
-- invoker (RLS applies as the caller) except the one lock helper.

-- Locks the posts the caller may see, in id order, for the counter updates that follow in
-- the same transaction. Every batch takes its locks in the same order up front, so two
-- batches touching the same posts in different orders wait for each other instead of
-- deadlocking (the likes trigger would otherwise lock them in plan order, statement by
-- statement). SECURITY DEFINER because an invoker may only lock rows it may update.
create or replace function public.lock_posts_for_counters(p_post_ids uuid[])
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform 1 from public.posts p
   where p.id = any (p_post_ids)
     and (p.status = 'published' or p.author_id = (select auth.uid()))
   order by p.id
   for no key update;
end;
$$;

-- Likes p_like and unlikes p_unlike as auth.uid(), in one call (one round trip), and
-- answers the resulting counts. Idempotent: liking twice counts once (ON CONFLICT DO
-- NOTHING), unliking what isn't liked deletes nothing; like_count is kept exact by the
-- likes triggers. Posts the caller cannot see (or that don't exist) are skipped and absent
-- from the answer. Each statement runs after the previous one's triggers, so the final
-- select sees the new counts.
create or replace function public.apply_likes(p_like uuid[], p_unlike uuid[])
returns table (id uuid, like_count integer, liked_by_me boolean)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
#variable_conflict use_column
declare
  uid uuid := (select auth.uid());
begin
  if uid is null then
    raise exception 'apply_likes needs a user' using errcode = '42501';
  end if;
  perform public.lock_posts_for_counters(coalesce(p_like, '{}') || coalesce(p_unlike, '{}'));

  insert into public.likes (user_id, post_id)
  select uid, p.id from public.posts p where p.id = any (p_like)
  on conflict do nothing;

  delete from public.likes l where l.user_id = uid and l.post_id = any (p_unlike);

  return query
    select p.id, p.like_count,
           exists (select 1 from public.likes l where l.user_id = uid and l.post_id = p.id)
    from public.posts p
    where p.id = any (coalesce(p_like, '{}') || coalesce(p_unlike, '{}'));
end;
$$;

-- Follows (p_follow) or unfollows p_followee as auth.uid(); idempotent. Answers the
-- followee's counts after the change, or no row when the profile doesn't exist. The counts
-- are exact under concurrency (follows triggers).
create or replace function public.set_follow(p_followee uuid, p_follow boolean)
returns table (follower_count integer, following_count integer)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
#variable_conflict use_column
declare
  uid uuid := (select auth.uid());
begin
  if uid is null then
    raise exception 'set_follow needs a user' using errcode = '42501';
  end if;
  if not exists (select 1 from public.profiles p where p.id = p_followee) then
    return;
  end if;
  if p_follow then
    insert into public.follows (follower_id, followee_id) values (uid, p_followee)
    on conflict do nothing;
  else
    delete from public.follows f where f.follower_id = uid and f.followee_id = p_followee;
  end if;
  return query
    select p.follower_count, p.following_count from public.profiles p where p.id = p_followee;
end;
$$;

-- Profiles matching p_query: word prefixes of display name or username (full text,
-- p_prefix_query is a tsquery such as 'elec:* & dru:*' built by the caller from letters
-- and digits only), or a typo away from one (trigram word similarity). Every branch is a
-- GIN index condition; ranked exact username, then prefix matches, then similarity.
create or replace function public.search_profiles(p_query text, p_prefix_query text, p_limit integer)
returns table (
  id uuid,
  username text,
  display_name text,
  avatar_url text,
  follower_count integer,
  score real
)
language sql
stable
security invoker
set search_path = ''
set pg_trgm.word_similarity_threshold = '0.5'
as $$
  select p.id, p.username, p.display_name, p.avatar_url, p.follower_count,
         ((case when p.username = p_query then 3 else 0 end)
          + (case when p.search_tsv @@ pg_catalog.to_tsquery('simple'::regconfig, p_prefix_query)
                  then 1 else 0 end)
          + greatest(extensions.word_similarity(p_query, p.username),
                     extensions.word_similarity(p_query, coalesce(p.display_name, ''))))::real
  from public.profiles p
  where p.search_tsv @@ pg_catalog.to_tsquery('simple'::regconfig, p_prefix_query)
     or p_query operator(extensions.<%) p.username
     or p_query operator(extensions.<%) p.display_name
  order by 6 desc, p.follower_count desc, p.id
  limit p_limit
$$;

revoke execute on function public.lock_posts_for_counters(uuid[]) from public, anon;
revoke execute on function public.apply_likes(uuid[], uuid[]) from public, anon;
revoke execute on function public.set_follow(uuid, boolean) from public, anon;
revoke execute on function public.search_profiles(text, text, integer) from public, anon;
grant execute on function public.lock_posts_for_counters(uuid[]) to authenticated, service_role;
grant execute on function public.apply_likes(uuid[], uuid[]) to authenticated, service_role;
grant execute on function public.set_follow(uuid, boolean) to authenticated, service_role;
grant execute on function public.search_profiles(text, text, integer) to authenticated, service_role;
