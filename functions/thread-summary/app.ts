/**
 * `thread-summary`: a post, a page of its replies, and a summary of the thread that costs at
 * most one LLM call per version of the replies, however many people read it (see
 * summary.ts). Readers never wait for the model and never get a 5xx because of it.
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { Deps } from "../../shared/deps.ts";
import { type App, bearerAuth, createFunctionApp } from "../../shared/http/app.ts";
import { notFound } from "../../shared/http/problem.ts";
import { uuid } from "../../shared/http/schemas.ts";
import { maxRepliesPage, Post, readThread, ReplyPage } from "../../shared/domain/threads.ts";
import { threadSummaryConfig } from "./config.ts";
import { ThreadSummaries } from "./summary.ts";

const Summary = z.object({
  text: z.string(),
  source: z.enum(["llm", "extractive"]),
  model: z.string().optional(),
  generated_at: z.string(),
  stale: z.boolean().openapi({
    description: "the replies changed since; a new summary is being made",
  }),
}).openapi("ThreadSummary");
const ThreadView = z.object({ post: Post, replies: ReplyPage, summary: Summary })
  .openapi("ThreadView");

/** The `thread-summary` app on `deps`. Throws at once when a `SUMMARY_*` variable is bad. */
export function createApp(deps: Deps): App {
  const summaries = new ThreadSummaries(deps, threadSummaryConfig(deps.env));
  const app = createFunctionApp("thread-summary", deps);

  const route = createRoute({
    method: "get",
    path: "/{postId}",
    summary: "A thread: the post, a page of replies (oldest first), and its summary",
    security: bearerAuth,
    middleware: [deps.auth.requireUser()] as const,
    request: {
      params: z.object({ postId: uuid() }),
      query: z.object({ cursor: z.string().optional() }),
    },
    responses: {
      200: { description: "the thread", content: { "application/json": { schema: ThreadView } } },
      404: { description: "no such post (for you)" },
    },
  });

  app.openapi(route, async (c) => {
    const { postId } = c.req.valid("param");
    const { cursor } = c.req.valid("query");
    const thread = await deps.db.asUser(
      c.var.user,
      (tx) => readThread(tx, postId, cursor, maxRepliesPage),
      c.var.budget,
    );
    if (!thread) throw notFound("post");
    const summary = await summaries.summaryFor(thread);
    c.header("cache-control", "private, no-cache");
    return c.json({ post: thread.post, replies: thread.replies, summary }, 200);
  });

  return app;
}
