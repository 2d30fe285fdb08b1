/**
 * Thread summaries: computed at most once per version of a thread's replies
 * (`posts.replies_updated_at`), stored in `thread_summaries` (durable: survives restarts and
 * cold isolates) and cached in the two-tier cache.
 *
 * Readers never wait for a model. A reader who finds the summary older than the replies gets
 * it marked `stale` and starts one regeneration after the response (coalesced across
 * isolates; the leader re-checks the table first, so a version is never summarized twice).
 * The LLM sees at most the newest N replies within a character budget; when it is not
 * configured, fails or its circuit is open, the most-liked replies stand in (`extractive`)
 * and the LLM is tried again after a backoff.
 *
 * @module
 */
import { runInBackground } from "../../shared/http/background.ts";
import { Budget } from "../../shared/http/budget.ts";
import type { TwoTierCache } from "../../shared/resilience/cache.ts";
import type { Deps } from "../../shared/deps.ts";
import { metrics } from "../../shared/http/metrics.ts";
import { chatJson, withClient } from "../../shared/providers/openai.ts";
import { callUpstream, upstreamFailure } from "../../shared/resilience/upstream.ts";
import type { ReplyT, Thread } from "../../shared/domain/threads.ts";
import type { ThreadSummaryConfig } from "./config.ts";
import * as q from "./queries.ts";
import type { SourceReply, SummaryRow } from "./queries.ts";

/** What the endpoint answers. */
export interface SummaryView {
  text: string;
  source: "llm" | "extractive";
  model?: string;
  generated_at: string;
  /** The replies changed since this summary was made; a new one is on its way. */
  stale: boolean;
}

/** A `thread_summaries` row, as cached. */
type StoredSummary = SummaryRow;

const feature = "thread_summary";
const maxReplyChars = 500;
const extractiveQuotes = 3;
const extractiveQuoteChars = 140;
const maxBackoffS = 3600;
const cacheKey = (postId: string) => `thread-summary:v1:${postId}`;

/** What summaries are read, made and stored with. */
export type SummaryDeps = Pick<Deps, "db" | "cache" | "coalescer" | "openai">;

/** Drops a post's summary from every cache tier of `cache` (after the table changed). */
export function forgetSummary(cache: TwoTierCache, postId: string): Promise<void> {
  return cache.invalidate(cacheKey(postId));
}

/** The summaries of one app: read for a thread, regenerated after the response. */
export class ThreadSummaries {
  readonly #deps: SummaryDeps;
  readonly #settings: ThreadSummaryConfig;

  constructor(deps: SummaryDeps, settings: ThreadSummaryConfig) {
    this.#deps = deps;
    this.#settings = settings;
  }

  /** The summary to show with `thread`; starts a regeneration when it is missing or out of date. */
  async summaryFor(thread: Thread): Promise<SummaryView> {
    const { post } = thread;
    if (thread.repliesVersion === null || post.reply_count === 0) {
      // Nothing to summarize: no model call, nothing stored.
      return {
        text: "No replies yet.",
        source: "extractive",
        generated_at: new Date().toISOString(),
        stale: false,
      };
    }
    const stored = await this.#stored(post.id);
    const current = stored?.version === thread.repliesVersion;
    if (!current || (stored && this.#llmRetryDue(stored))) this.#regenerateInBackground(post.id);
    if (stored) {
      return {
        text: stored.text,
        source: stored.source,
        ...(stored.model ? { model: stored.model } : {}),
        generated_at: stored.generated_at,
        stale: !current,
      };
    }
    // First summary of this thread: the most-liked replies of this page until it is ready.
    // Built from the current replies, so not stale (stale means "the replies changed since").
    const replies = thread.replies.items.map(toSourceReply);
    return {
      text: extractiveText(replies, post.reply_count),
      source: "extractive",
      generated_at: new Date().toISOString(),
      stale: false,
    };
  }

  /** The stored summary of `postId` (null: none yet), through the cache. */
  #stored(postId: string): Promise<StoredSummary | null> {
    const { db, cache } = this.#deps;
    return cache.get(cacheKey(postId), { ttlS: 300 }, async () => {
      const [row] = await db.query(q.storedSummary(db.sql, postId));
      if (!row) return null;
      return {
        ...row,
        generated_at: new Date(row.generated_at).toISOString(),
        retry_after: row.retry_after ? new Date(row.retry_after).toISOString() : null,
      };
    });
  }

  /** An extractive fallback whose backoff has passed, while an LLM is configured. */
  #llmRetryDue(s: { source: string; retry_after: string | null }): boolean {
    return s.source === "extractive" && this.#deps.openai.models !== null &&
      s.retry_after !== null && Date.parse(s.retry_after) <= Date.now();
  }

  /** One regeneration after the response, shared by every caller across isolates. */
  #regenerateInBackground(postId: string): void {
    const timeoutMs = this.#settings.llmTimeoutMs;
    runInBackground(
      `thread summary ${postId}`,
      this.#deps.coalescer.run(`thread-summary:${postId}`, () => this.regenerate(postId), {
        // The leader holds the lock for the whole model call; the others wait for it rather
        // than computing the same summary themselves.
        lockTtlMs: timeoutMs + 10_000,
        waitMs: timeoutMs + 10_000,
      }),
    );
  }

  /**
   * Summarizes the thread's current version unless the table already has it, stores the
   * result, and drops the cached copy. Returns what it did (tests, logs).
   */
  async regenerate(postId: string): Promise<"current" | "llm" | "extractive"> {
    const { db, cache, openai } = this.#deps;
    const settings = this.#settings;
    // Both statements go through the isolate's pool gate: background work can't take the
    // connections request work needs.
    const [thread] = await db.query(q.threadSource(db.sql, postId, settings.maxReplies));
    if (!thread?.version) return "current";
    const upToDate = thread.summary_version === thread.version &&
      (thread.source === "llm" || !this.#llmRetryDue({
        source: thread.source ?? "",
        retry_after: thread.retry_after ? new Date(thread.retry_after).toISOString() : null,
      }));
    if (upToDate) return "current";

    const newestFirst = thread.replies;
    const attempt = openai.models
      ? await this.#summarizeWithLlm(thread.post_body, newestFirst, thread.reply_count)
      : null;
    const failures = attempt?.ok ? 0 : (thread.llm_failures ?? 0) + (attempt ? 1 : 0);
    const retryAfterS = attempt && !attempt.ok
      ? Math.min(settings.retryAfterS * 2 ** Math.max(0, failures - 1), maxBackoffS)
      : null;
    const text = attempt?.ok ? attempt.text : extractiveText(newestFirst, thread.reply_count);
    const source = attempt?.ok ? "llm" : "extractive";
    metrics.inc("thread_summaries_total", { source });
    await db.query(q.upsertSummary(db.sql, {
      postId,
      text,
      source,
      model: attempt?.ok ? attempt.model : null,
      version: thread.version,
      replyCount: thread.reply_count,
      retryAfterS,
      failures,
      calls: attempt?.calls ?? 0,
      promptTokens: attempt?.promptTokens ?? 0,
      completionTokens: attempt?.completionTokens ?? 0,
    }));
    await forgetSummary(cache, postId);
    return source;
  }

  /** One model call (`SUMMARY_LLM_TIMEOUT_MS`, through the breaker); never throws. */
  async #summarizeWithLlm(
    postBody: string,
    newestFirst: SourceReply[],
    replyCount: number,
  ): Promise<LlmAttempt> {
    const { openai } = this.#deps;
    const model = openai.models!.small;
    const lines = withinBudget(newestFirst, this.#settings.maxInputChars).reverse();
    const user = [
      `Post: ${trim(postBody, 1000)}`,
      "",
      `Replies (the newest ${lines.length} of ${replyCount}, oldest first):`,
      ...lines,
    ].join("\n");
    let reachedApi = false;
    try {
      const { value, usage } = await callUpstream(
        openai.chat,
        withClient(openai, (client, signal) => {
          reachedApi = true;
          return chatJson<{ summary: string }>(client, {
            model,
            system: "You summarize the replies to a post on a social music app in one to three " +
              "sentences: the main opinions, where people agree and disagree. Neutral tone; no " +
              "usernames unless they matter. Answer JSON {summary}.",
            user,
            schemaName: "thread_summary",
            schema,
            maxTokens: 300,
          }, signal);
        }),
        { budget: new Budget(this.#settings.llmTimeoutMs) },
      );
      const text = trim(String(value.summary ?? "").trim(), 2000);
      if (!text) throw new Error("empty summary");
      metrics.inc("llm_calls_total", { feature, model: usage.model, outcome: "ok" });
      metrics.inc(
        "llm_tokens_total",
        { feature, model: usage.model, kind: "prompt" },
        usage.promptTokens,
      );
      metrics.inc(
        "llm_tokens_total",
        { feature, model: usage.model, kind: "completion" },
        usage.completionTokens,
      );
      return {
        ok: true,
        text,
        model: usage.model,
        calls: 1,
        promptTokens: usage.promptTokens,
        completionTokens: usage.completionTokens,
      };
    } catch (err) {
      const failure = upstreamFailure(err);
      if (reachedApi) metrics.inc("llm_calls_total", { feature, model, outcome: failure });
      console.warn(JSON.stringify({ msg: "thread summary fell back to extractive", failure }));
      return { ok: false, calls: reachedApi ? 1 : 0, promptTokens: 0, completionTokens: 0 };
    }
  }
}

type LlmAttempt =
  | {
    ok: true;
    text: string;
    model: string;
    calls: number;
    promptTokens: number;
    completionTokens: number;
  }
  | { ok: false; calls: number; promptTokens: 0; completionTokens: 0 };

const schema = {
  type: "object",
  properties: { summary: { type: "string" } },
  required: ["summary"],
  additionalProperties: false,
};

/** Newest replies, one line each, until `maxChars` is spent (always at least one). */
function withinBudget(newestFirst: SourceReply[], maxChars: number): string[] {
  const lines: string[] = [];
  let used = 0;
  for (const r of newestFirst) {
    const line = `- ${r.who}: ${trim(r.body.replace(/\s+/g, " "), maxReplyChars)}`;
    if (lines.length && used + line.length > maxChars) break;
    lines.push(line);
    used += line.length + 1;
  }
  return lines;
}

/** The most-liked replies, trimmed: the summary when no model can write one. */
function extractiveText(replies: SourceReply[], replyCount: number): string {
  const top = [...replies].sort((a, b) => b.like_count - a.like_count).slice(0, extractiveQuotes);
  const quotes = top.map((r) =>
    `“${trim(r.body.replace(/\s+/g, " "), extractiveQuoteChars)}” (${r.who})`
  );
  const count = `${replyCount} ${replyCount === 1 ? "reply" : "replies"}`;
  return quotes.length ? `${count}. Most liked: ${quotes.join(" · ")}` : `${count}.`;
}

function toSourceReply(r: ReplyT): SourceReply {
  return {
    who: r.author ? `@${r.author.username}` : "a persona",
    body: r.body,
    like_count: r.like_count,
  };
}

function trim(text: string, max: number): string {
  const chars = [...text];
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join("")}…`;
}
