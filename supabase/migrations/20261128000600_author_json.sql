-- One author shape: a post's or a reply's author as the API answers it ({id, username,
-- display_name, avatar_url}), written once here instead of in every query (issue 11).
--
-- Written so the planner inlines it into the calling query: LANGUAGE SQL, a single SELECT of
-- one expression, no SET clause, not SECURITY DEFINER, not STRICT, and STABLE like the
-- jsonb_build_object it wraps (an IMMUTABLE label over a STABLE body would block inlining).
-- Inlined, `(a).id` of the whole-row argument folds back to the plain column `a.id`, so the
-- plans are the ones the hand-written object had. Inlining checks EXECUTE as the caller, so
-- every role that runs a query using it may execute it: anon and authenticated (feed_for_you,
-- the thread read, the posts queries); 20261128000400's default privileges grant it nobody
-- else.
--
-- A left-joined author that is missing stays `case when a.id is null then null else … end`
-- at the call site: this function would answer an object of nulls for it.
create or replace function public.author_json(a public.profiles)
returns jsonb
language sql
stable
parallel safe
as $$
  select pg_catalog.jsonb_build_object(
    'id', a.id,
    'username', a.username,
    'display_name', a.display_name,
    'avatar_url', a.avatar_url
  )
$$;

comment on function public.author_json(public.profiles) is
  'A post''s or reply''s author as the API answers it: {id, username, display_name, avatar_url}.';

revoke execute on function public.author_json(public.profiles) from public, anon, authenticated;
grant execute on function public.author_json(public.profiles) to anon, authenticated, service_role;

-- The feed RPCs of 20261125000500, unchanged but for the author through author_json
-- (create or replace keeps their grants; signatures, SECURITY and SET clauses as they were).

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
    public.author_json(a) as author,
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
    public.author_json(a) as author
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
