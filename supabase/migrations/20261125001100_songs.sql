-- The songs catalog recall searches first (our database: always on, free).
-- Full text over title, artist, album, lyrics excerpt and keywords (weighted
-- tsvector + GIN), and trigram word_similarity on "title artist" as the typo
-- fallback. pg_trgm lives in schema `extensions` (Supabase's convention;
-- scripts/bootstrap.sql does the same on plain Postgres).

create extension if not exists pg_trgm with schema extensions;

create table public.songs (
  id uuid primary key default gen_random_uuid(),
  title text not null constraint songs_title_length check (char_length(title) between 1 and 300),
  artist text not null constraint songs_artist_length check (char_length(artist) between 1 and 300),
  album text constraint songs_album_length check (char_length(album) <= 300),
  year integer constraint songs_year_range check (year between 1800 and 2100),
  -- A short excerpt or keywords (never full lyrics).
  lyrics_excerpt text constraint songs_lyrics_excerpt_length check (char_length(lyrics_excerpt) <= 500),
  keywords text constraint songs_keywords_length check (char_length(keywords) <= 500),
  popularity integer not null default 0 constraint songs_popularity_nonneg check (popularity >= 0),
  search tsvector generated always as (
    setweight(to_tsvector('pg_catalog.english'::regconfig, coalesce(title, '')), 'A') ||
    setweight(to_tsvector('pg_catalog.english'::regconfig, coalesce(artist, '')), 'A') ||
    setweight(to_tsvector('pg_catalog.english'::regconfig, coalesce(album, '')), 'C') ||
    setweight(to_tsvector('pg_catalog.english'::regconfig, coalesce(lyrics_excerpt, '')), 'B') ||
    setweight(to_tsvector('pg_catalog.english'::regconfig, coalesce(keywords, '')), 'C')
  ) stored,
  created_at timestamptz not null default now()
);

comment on table public.songs is
  'Recall catalog. Demo data is synthetic (scripts/seed.ts): invented titles, artists and lines.';

create index songs_search_idx on public.songs using gin (search);
create index songs_title_artist_trgm_idx
  on public.songs using gin ((lower(title || ' ' || artist)) extensions.gin_trgm_ops);
-- Exact lookups when attaching song_id to a provider's candidate.
create index songs_title_artist_lower_idx on public.songs (lower(title), lower(artist));

alter table public.songs enable row level security;

create policy songs_select_all on public.songs
  for select to anon, authenticated
  using (true);

revoke insert, update, delete on public.songs from anon, authenticated;

-- Songs matching free text: full text first (every word, stemmed), and only
-- when that finds nothing, trigram word_similarity of the text against
-- "title artist" (typos, partial titles). `matched` says how: 'title' (every
-- word is in the title and artist, and not all in the artist: the user named
-- the song), 'full_text' (lyrics, album, keywords), 'trigram'; `score` is the
-- text rank in [0, 1] or the trigram similarity.
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
  q tsquery := pg_catalog.websearch_to_tsquery('pg_catalog.english'::regconfig, p_query);
  needle text := lower(left(p_query, 200));
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
      from public.songs s
      where s.search @@ q
      order by pg_catalog.ts_rank(s.search, q) desc, s.popularity desc, s.id
      limit p_limit;
    if found then
      return;
    end if;
  end if;
  return query
    select s.id, s.title, s.artist, s.album, s.year,
      extensions.word_similarity(needle, lower(s.title || ' ' || s.artist))::double precision,
      'trigram'::text
    from public.songs s
    where needle operator(extensions.<%) lower(s.title || ' ' || s.artist)
    order by extensions.word_similarity(needle, lower(s.title || ' ' || s.artist)) desc,
      s.popularity desc, s.id
    limit p_limit;
end;
$$;

-- The catalog's songs among (title, artist) pairs, matched case-insensitively
-- (one index probe per pair): attaches song_id to other providers' candidates.
create or replace function public.match_songs(p_titles text[], p_artists text[])
returns table (id uuid, title text, artist text, album text, year integer)
language sql
stable
security invoker
set search_path = ''
as $$
  select s.id, s.title, s.artist, s.album, s.year
  from unnest(p_titles, p_artists) as wanted (title, artist)
  join public.songs s on lower(s.title) = lower(wanted.title)
    and lower(s.artist) = lower(wanted.artist)
$$;

grant execute on function public.search_songs(text, integer) to anon, authenticated, service_role;
grant execute on function public.match_songs(text[], text[]) to anon, authenticated, service_role;
