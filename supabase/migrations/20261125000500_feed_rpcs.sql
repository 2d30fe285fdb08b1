-- Feed RPCs. security invoker: RLS applies as the caller (role authenticated /
-- anon with request.jwt.claims set per transaction). Keyset pagination with
-- row comparisons that are index conditions; no OFFSET.
--
-- Parameters are coalesced instead of `p_x is null or …`: on PG 15–17 a
-- non-inlined SQL function plans its body generically (parameter values
-- unknown), and an OR with "is null" would turn the keyset into a filter that
-- scans from the top of the index on every deep page. 'infinity' and the max
-- uuid make the first page the same index seek.
-- Each coalesce sits in a scalar sub-select (an InitPlan, i.e. a plain Param):
-- under RLS the planner only lets leakproof quals become index conditions
-- ahead of the policy quals, and a bare COALESCE node counts as not leakproof,
-- which silently turned the row comparison into a Filter (measured: deep
-- for-you page 102 ms → index seek).
--
-- migrations/migrations_test.ts EXPLAINs these bodies (read from pg_proc) on
-- seeded data and fails on a Seq Scan on posts or a Sort over posts.

-- Posts by the people auth.uid() follows, newest first.
-- Cursor: (created_at, id) of the last row; cursor_key = created_at::text
-- (the exact database text, microseconds included) — pass it back as
-- p_before_created_at together with p_before_id.
create or replace function public.feed_following(
  p_limit integer,
  p_before_created_at timestamptz default null,
  p_before_id uuid default null
)
returns table (
  id uuid,
  body text,
  media_url text,
  thumbnail_url text,
  like_count integer,
  reply_count integer,
  created_at timestamptz,
  cursor_key text,
  author jsonb,
  liked_by_me boolean
)
language sql
stable
security invoker
set search_path = ''
set "DateStyle" = 'ISO, MDY'
as $$
  with page as (
    -- Per followee, the first p_limit (created_at, id) past the cursor: an
    -- index-only seek in posts_author_published_recent_idx. The union of those
    -- bounded lists holds the global page; top-N it, then fetch the rows.
    select fp.id, fp.created_at
    from public.follows f
    cross join lateral (
      select p.id, p.created_at
      from public.posts p
      where p.author_id = f.followee_id
        and p.status = 'published'
        and (p.created_at, p.id) < (
          (select coalesce(p_before_created_at, 'infinity'::timestamptz)),
          (select coalesce(p_before_id, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid))
        )
      order by p.created_at desc, p.id desc
      limit p_limit
    ) fp
    where f.follower_id = (select auth.uid())
    order by fp.created_at desc, fp.id desc
    limit p_limit
  )
  select
    p.id,
    p.body,
    p.media_url,
    p.thumbnail_url,
    p.like_count,
    p.reply_count,
    p.created_at,
    p.created_at::text as cursor_key,
    jsonb_build_object(
      'id', a.id,
      'username', a.username,
      'display_name', a.display_name,
      'avatar_url', a.avatar_url
    ) as author,
    exists (
      select 1 from public.likes l
      where l.user_id = (select auth.uid()) and l.post_id = p.id
    ) as liked_by_me
  from page
  join public.posts p on p.id = page.id
  join public.profiles a on a.id = p.author_id
  where p.status = 'published'
  order by page.created_at desc, page.id desc
$$;

-- Everyone's published posts by hot rank. No per-viewer columns: the page is
-- cached and shared. cursor_key = hot_score::text (shortest-exact float8 text
-- with extra_float_digits >= 1, pinned here) — pass it back as p_before_score.
create or replace function public.feed_for_you(
  p_limit integer,
  p_before_score double precision default null,
  p_before_id uuid default null
)
returns table (
  id uuid,
  body text,
  media_url text,
  thumbnail_url text,
  like_count integer,
  reply_count integer,
  created_at timestamptz,
  cursor_key text,
  author jsonb
)
language sql
stable
security invoker
set search_path = ''
set extra_float_digits = 1
as $$
  select
    p.id,
    p.body,
    p.media_url,
    p.thumbnail_url,
    p.like_count,
    p.reply_count,
    p.created_at,
    p.hot_score::text as cursor_key,
    jsonb_build_object(
      'id', a.id,
      'username', a.username,
      'display_name', a.display_name,
      'avatar_url', a.avatar_url
    ) as author
  from public.posts p
  join public.profiles a on a.id = p.author_id
  where p.status = 'published'
    and (p.hot_score, p.id) < (
      (select coalesce(p_before_score, 'infinity'::double precision)),
      (select coalesce(p_before_id, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid))
    )
  order by p.hot_score desc, p.id desc
  limit p_limit
$$;

-- Which of these posts auth.uid() liked (primary-key probes).
create or replace function public.liked_post_ids(p_post_ids uuid[])
returns setof uuid
language sql
stable
security invoker
set search_path = ''
as $$
  select l.post_id
  from public.likes l
  where l.user_id = (select auth.uid())
    and l.post_id = any (p_post_ids)
$$;

revoke execute on function public.feed_following(integer, timestamptz, uuid) from public, anon;
revoke execute on function public.feed_for_you(integer, double precision, uuid) from public;
revoke execute on function public.liked_post_ids(uuid[]) from public, anon;
grant execute on function public.feed_following(integer, timestamptz, uuid) to authenticated, service_role;
grant execute on function public.feed_for_you(integer, double precision, uuid) to anon, authenticated, service_role;
grant execute on function public.liked_post_ids(uuid[]) to authenticated, service_role;
