-- Thread summaries: one row per post, computed for one version of its replies
-- (posts.replies_updated_at). Written only by the service role (thread-summary's background
-- regeneration); readable by whoever can see the post.

create table public.thread_summaries (
  post_id uuid primary key references public.posts (id) on delete cascade,
  text text not null constraint thread_summaries_text_length check (char_length(text) <= 4000),
  source text not null constraint thread_summaries_source_check check (source in ('llm', 'extractive')),
  model text,
  generated_at timestamptz not null default now(),
  -- The posts.replies_updated_at this summary was computed for.
  replies_updated_at timestamptz not null,
  reply_count integer not null,
  -- An extractive fallback (LLM unavailable) retries the LLM after this time; null otherwise.
  retry_after timestamptz,
  -- Consecutive failed LLM attempts for this post (drives the backoff); 0 after a success.
  llm_failures integer not null default 0,
  -- What this post has cost so far, all versions together.
  llm_calls integer not null default 0,
  prompt_tokens bigint not null default 0,
  completion_tokens bigint not null default 0
);

comment on table public.thread_summaries is
  'Latest summary of a thread, for posts.replies_updated_at = replies_updated_at; the LLM '
  'cost per post (llm_calls, prompt_tokens, completion_tokens) accumulates across versions.';

alter table public.thread_summaries enable row level security;

create policy thread_summaries_select_visible_post on public.thread_summaries
  for select to anon, authenticated
  using (exists (select 1 from public.posts p where p.id = post_id));

revoke insert, update, delete on public.thread_summaries from anon, authenticated;
