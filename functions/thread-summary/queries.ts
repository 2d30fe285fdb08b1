/**
 * `thread-summary`'s SQL: one named function per statement. Run with the function's own role
 * through `query` (background work and shared caches, not a caller's rows).
 *
 * @module
 */
import type postgres from "postgres";

/** A `thread_summaries` row as read (times as ISO text once cached). */
export interface SummaryRow {
  text: string;
  source: "llm" | "extractive";
  model: string | null;
  generated_at: string;
  /** `replies_updated_at::text` it was computed for (exact database text). */
  version: string;
  /** When an extractive fallback may try the LLM again (ISO), or null. */
  retry_after: string | null;
}

/** A reply as the summarizers read it. */
export interface SourceReply {
  who: string;
  body: string;
  like_count: number;
}

/** A post, its current summary's state and its newest replies: what a regeneration reads. */
export interface ThreadSource {
  version: string | null;
  reply_count: number;
  post_body: string;
  summary_version: string | null;
  source: string | null;
  retry_after: string | null;
  llm_failures: number | null;
  replies: SourceReply[];
}

/** The stored summary of `postId`, if any. */
export const storedSummary = (
  db: postgres.Sql,
  postId: string,
): postgres.PendingQuery<SummaryRow[]> =>
  db<SummaryRow[]>`
      select text, source, model, generated_at, replies_updated_at::text as version, retry_after
      from public.thread_summaries where post_id = ${postId}`;

/** The post `postId` with its summary's version and its newest `maxReplies` replies. */
export const threadSource = (
  db: postgres.Sql,
  postId: string,
  maxReplies: number,
): postgres.PendingQuery<ThreadSource[]> =>
  db<ThreadSource[]>`
    select p.replies_updated_at::text as version, p.reply_count, p.body as post_body,
      s.replies_updated_at::text as summary_version, s.source, s.retry_after, s.llm_failures,
      coalesce((
        select jsonb_agg(jsonb_build_object('who', r.who, 'body', r.body, 'like_count', r.like_count)
          order by r.created_at desc, r.id desc)
        from (
          select r.id, r.body, r.like_count, r.created_at,
            coalesce('@' || a.username, 'a persona') as who
          from public.replies r left join public.profiles a on a.id = r.author_id
          where r.post_id = p.id
          order by r.created_at desc, r.id desc
          limit ${maxReplies}
        ) r
      ), '[]'::jsonb) as replies
    from public.posts p left join public.thread_summaries s on s.post_id = p.id
    where p.id = ${postId}`;

/** What one regeneration stores. */
export interface SummaryWrite {
  postId: string;
  text: string;
  source: "llm" | "extractive";
  model: string | null;
  /** `replies_updated_at::text` it was computed for. */
  version: string;
  replyCount: number;
  /** Backoff before the LLM is tried again, or null. */
  retryAfterS: number | null;
  failures: number;
  calls: number;
  promptTokens: number;
  completionTokens: number;
}

/**
 * Stores a summary: its content only moves forward (an older version finishing late must not
 * win), while its cost always adds up.
 */
export const upsertSummary = (
  db: postgres.Sql,
  a: SummaryWrite,
): postgres.PendingQuery<postgres.Row[]> =>
  db`
    insert into public.thread_summaries as s (post_id, text, source, model, generated_at,
      replies_updated_at, reply_count, retry_after, llm_failures, llm_calls, prompt_tokens,
      completion_tokens)
    values (${a.postId}, ${a.text}, ${a.source}, ${a.model}, now(),
      ${a.version}::text::timestamptz, ${a.replyCount},
      now() + make_interval(secs => ${a.retryAfterS}::float8), ${a.failures}, ${a.calls},
      ${a.promptTokens}, ${a.completionTokens})
    on conflict (post_id) do update set
      -- the content only moves forward (an older version finishing late must not win)…
      text = case when excluded.replies_updated_at >= s.replies_updated_at then excluded.text else s.text end,
      source = case when excluded.replies_updated_at >= s.replies_updated_at then excluded.source else s.source end,
      model = case when excluded.replies_updated_at >= s.replies_updated_at then excluded.model else s.model end,
      generated_at = case when excluded.replies_updated_at >= s.replies_updated_at then excluded.generated_at else s.generated_at end,
      reply_count = case when excluded.replies_updated_at >= s.replies_updated_at then excluded.reply_count else s.reply_count end,
      retry_after = case when excluded.replies_updated_at >= s.replies_updated_at then excluded.retry_after else s.retry_after end,
      llm_failures = case when excluded.replies_updated_at >= s.replies_updated_at then excluded.llm_failures else s.llm_failures end,
      replies_updated_at = greatest(s.replies_updated_at, excluded.replies_updated_at),
      -- …while the cost always adds up.
      llm_calls = s.llm_calls + excluded.llm_calls,
      prompt_tokens = s.prompt_tokens + excluded.prompt_tokens,
      completion_tokens = s.completion_tokens + excluded.completion_tokens`;
