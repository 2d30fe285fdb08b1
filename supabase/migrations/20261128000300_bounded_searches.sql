-- Searches bounded by design (issue 10: a slow search must not hold the pool).
--
-- Before: every match was ranked. A profile prefix that matches most names ("user") ranked
-- 100k rows (0.4-1 s); a song query of stop words ("or or or ...") fell through to a
-- trigram scan of all 200k songs (0.8 s), and one stuffed with OR ranked every song
-- matching any word. Now each index branch yields at most a fixed number of candidates
-- (an index scan that stops early), and only those are ranked; the inputs are cut to a
-- few words and characters; callers add a short statement_timeout of their own.

-- Profiles -------------------------------------------------------------------
-- Candidates: the exact username (unique index), word prefixes of names (GIN full text)
-- and a typo away (GIN trigram), at most 200 from each, each branch an index scan that
-- stops early; only they are ranked, as before. The trigram needle is cut to 32 characters
-- (usernames have at most 30), p_limit to 100.
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
  with candidates as (
    (select p.id, p.username, p.display_name, p.avatar_url, p.follower_count, p.search_tsv
       from public.profiles p
      where p.username = left(p_query, 30))
    union
    (select p.id, p.username, p.display_name, p.avatar_url, p.follower_count, p.search_tsv
       from public.profiles p
      where p_prefix_query is not null
        and p.search_tsv @@ pg_catalog.to_tsquery('simple'::regconfig, p_prefix_query)
      limit 200)
    union
    (select p.id, p.username, p.display_name, p.avatar_url, p.follower_count, p.search_tsv
       from public.profiles p
      where pg_catalog.length(p_query) >= 3
        and left(p_query, 32) operator(extensions.<%) p.username
      limit 200)
    union
    (select p.id, p.username, p.display_name, p.avatar_url, p.follower_count, p.search_tsv
       from public.profiles p
      where pg_catalog.length(p_query) >= 3
        and left(p_query, 32) operator(extensions.<%) p.display_name
      limit 200)
  )
  select c.id, c.username, c.display_name, c.avatar_url, c.follower_count,
         ((case when c.username = p_query then 3 else 0 end)
          + (case when p_prefix_query is not null
                   and c.search_tsv @@ pg_catalog.to_tsquery('simple'::regconfig, p_prefix_query)
                  then 1 else 0 end)
          + greatest(extensions.word_similarity(left(p_query, 32), c.username),
                     extensions.word_similarity(left(p_query, 32), coalesce(c.display_name, ''))))::real
  from candidates c
  order by 6 desc, c.follower_count desc, c.id
  limit least(greatest(p_limit, 1), 100)
$$;

-- Songs ----------------------------------------------------------------------
-- The text becomes at most 8 distinct words of 2+ letters or digits, ANDed (no operators:
-- a user's "or" is a word, and a stop word). Full text ranks at most 500 candidates. The
-- trigram fallback runs only for a needle of 3+ characters left after stop words, and
-- ranks at most 500 candidates.
create or replace function public.search_songs(p_query text, p_limit integer default 5)
returns table (
  id uuid,
  title text,
  artist text,
  album text,
  year integer,
  score double precision,
  matched text
)
language plpgsql
stable
security invoker
set search_path = ''
-- pg_trgm's default (0.6) misses two typos in a short title.
set pg_trgm.word_similarity_threshold = 0.45
as $$
declare
  words text[] := array(
    select w from (
      select w, min(n) as first
      from pg_catalog.regexp_split_to_table(lower(left(p_query, 500)), '[^[:alnum:]]+')
        with ordinality as t(w, n)
      where pg_catalog.length(w) >= 2
      group by w
    ) d
    order by first
    limit 8
  );
  q tsquery := pg_catalog.plainto_tsquery('pg_catalog.english'::regconfig,
    pg_catalog.array_to_string(words, ' '));
  -- The words that carry meaning (not stop words), for the typo fallback.
  needle text := left(pg_catalog.array_to_string(array(
    select w from pg_catalog.unnest(words) as u(w)
    where pg_catalog.numnode(pg_catalog.plainto_tsquery('pg_catalog.english'::regconfig, w)) > 0
  ), ' '), 100);
  cap integer := least(greatest(p_limit, 1), 50);
begin
  if pg_catalog.numnode(q) > 0 then
    return query
      select s.id, s.title, s.artist, s.album, s.year,
        pg_catalog.ts_rank(s.search, q)::double precision,
        case
          when pg_catalog.to_tsvector('pg_catalog.english'::regconfig, s.title || ' ' || s.artist) @@ q
            and not pg_catalog.to_tsvector('pg_catalog.english'::regconfig, s.artist) @@ q
          then 'title'
          else 'full_text'
        end
      from (select c.id from public.songs c where c.search @@ q limit 500) m
      join public.songs s on s.id = m.id
      order by pg_catalog.ts_rank(s.search, q) desc, s.popularity desc, s.id
      limit cap;
    if found then
      return;
    end if;
  end if;
  if pg_catalog.length(needle) < 3 then
    return;
  end if;
  return query
    select s.id, s.title, s.artist, s.album, s.year,
      extensions.word_similarity(needle, lower(s.title || ' ' || s.artist))::double precision,
      'trigram'::text
    from (
      select c.id from public.songs c
      where needle operator(extensions.<%) lower(c.title || ' ' || c.artist)
      limit 500
    ) m
    join public.songs s on s.id = m.id
    order by extensions.word_similarity(needle, lower(s.title || ' ' || s.artist)) desc,
      s.popularity desc, s.id
    limit cap;
end;
$$;
