/**
 * `recall`: the caller's recall threads and their messages (reads and soft delete).
 *
 *   GET    /recall/threads                 20 a page, most recently active first
 *   GET    /recall/threads/:id
 *   GET    /recall/threads/:id/messages    50 a page, newest first (keyset)
 *   DELETE /recall/threads/:id             soft delete → 204
 *
 * Reads run as the caller (RLS: owner only) and are cached per user in the two-tier cache:
 * threads 5 min, messages 1 min, tagged `recall-threads:<user>` / `recall-thread:<id>`, which
 * `recall-resolve` and the delete here invalidate the moment they write. Somebody else's
 * thread is a 404, exactly like one that does not exist.
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { AuthUser } from "../../shared/auth/auth.ts";
import type { Budget } from "../../shared/http/budget.ts";
import { keyFormats } from "../../shared/data/cursor.ts";
import type { Database } from "../../shared/data/db.ts";
import type { Deps } from "../../shared/deps.ts";
import {
  invalidateRecallThread,
  recallThreadsTag,
  recallThreadTag,
} from "../../shared/domain/recall_cache.ts";
import { type App, bearerAuth, createFunctionApp, jsonContent } from "../../shared/http/app.ts";
import { type PageArgs, pageArgs, toPage } from "../../shared/data/keyset.ts";
import { notFound } from "../../shared/http/problem.ts";
import { rateLimit } from "../../shared/resilience/ratelimit.ts";
import { uuid } from "../../shared/http/schemas.ts";
import { recallConfig } from "./config.ts";
import * as q from "./queries.ts";
import type { MessageRow, ThreadRow } from "./queries.ts";

const threadsPage = 20;
const messagesPage = 50;
const threadsTtlS = 300;
const messagesTtlS = 60;

const Thread = z.object({
  id: z.uuid(),
  title: z.string(),
  status: z.enum(["active", "archived"]),
  last_message_at: z.string(),
  created_at: z.string(),
}).openapi("RecallThread");
const ThreadPage = z.object({ items: z.array(Thread), next_cursor: z.string().nullable() })
  .openapi("RecallThreadPage");
const Message = z.object({
  id: z.uuid(),
  thread_id: z.uuid(),
  role: z.enum(["user", "assistant"]),
  type: z.enum(["text", "audio", "candidates", "error"]),
  content: z.string(),
  candidate_json: z.unknown().nullable(),
  created_at: z.string(),
}).openapi("RecallMessage");
const MessagePage = z.object({ items: z.array(Message), next_cursor: z.string().nullable() })
  .openapi("RecallMessagePage");

const pageQuery = (max: number) =>
  z.object({
    limit: z.coerce.number().int().min(1).default(max).transform((n) => Math.min(n, max)),
    cursor: z.string().optional(),
  });
const ThreadParam = z.object({ id: uuid() });
const threadKeys = { tag: "recall-threads", key: keyFormats.timestamptz };
const messageKeys = { tag: "recall-messages", key: keyFormats.timestamptz };

type Thread = z.infer<typeof Thread>;
type Message = z.infer<typeof Message>;
type Page<T> = { items: T[]; next_cursor: string | null };

/** The `recall` app on `deps`. Throws at once when `RECALL_READ_RATE_LIMIT_PER_MIN` is bad. */
export function createApp(deps: Deps): App {
  const settings = recallConfig(deps.env);
  const { db, cache } = deps;
  const limiter = deps.rateLimiter({
    name: "recall-read",
    windows: [{ limit: settings.readsPerMin, windowS: 60 }],
    failOpen: true, // cheap, cached reads
  });
  const app = createFunctionApp("recall", deps);
  const requireUser = deps.auth.requireUser();
  const limitReads = rateLimit(limiter, (c) => c.var.user!.id);

  app.openapi(
    createRoute({
      method: "get",
      path: "/threads",
      summary: "The caller's recall threads",
      security: bearerAuth,
      middleware: [requireUser, limitReads] as const,
      request: { query: pageQuery(threadsPage) },
      responses: { 200: jsonContent(ThreadPage, "a page") },
    }),
    async (c) => {
      const { limit, cursor } = c.req.valid("query");
      const user = c.var.user!;
      const p = pageArgs(threadKeys, limit, cursor);
      const page = await cache.get(
        `recall:threads:${user.id}:${limit}:${cursor ?? ""}`,
        { ttlS: threadsTtlS, tags: [recallThreadsTag(user.id)] },
        () => listThreads(db, user, p, c.var.budget),
      );
      c.header("cache-control", "private, no-cache");
      return c.json(page, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/threads/{id}",
      summary: "One of the caller's recall threads",
      security: bearerAuth,
      middleware: [requireUser, limitReads] as const,
      request: { params: ThreadParam },
      responses: { 200: jsonContent(Thread, "the thread") },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const user = c.var.user!;
      const thread = await cache.get(
        `recall:thread:${user.id}:${id}`,
        { ttlS: threadsTtlS, tags: [recallThreadTag(id), recallThreadsTag(user.id)] },
        () => getThread(db, user, id, c.var.budget),
      );
      if (!thread) throw notFound("thread");
      c.header("cache-control", "private, no-cache");
      return c.json(thread, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/threads/{id}/messages",
      summary: "A thread's messages, newest first",
      security: bearerAuth,
      middleware: [requireUser, limitReads] as const,
      request: { params: ThreadParam, query: pageQuery(messagesPage) },
      responses: { 200: jsonContent(MessagePage, "a page") },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const { limit, cursor } = c.req.valid("query");
      const user = c.var.user!;
      const p = pageArgs(messageKeys, limit, cursor);
      const page = await cache.get(
        `recall:messages:${user.id}:${id}:${limit}:${cursor ?? ""}`,
        { ttlS: messagesTtlS, tags: [recallThreadTag(id)] },
        () => listMessages(db, user, id, p, c.var.budget),
      );
      if (!page) throw notFound("thread");
      c.header("cache-control", "private, no-cache");
      return c.json(page, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "delete",
      path: "/threads/{id}",
      summary: "Delete a recall thread (soft)",
      security: bearerAuth,
      middleware: [requireUser, limitReads] as const,
      request: { params: ThreadParam },
      responses: { 204: { description: "deleted" } },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const user = c.var.user!;
      const [deleted] = await db.asUser(user, (tx) => q.deleteThread(tx, id), c.var.budget);
      if (!deleted) throw notFound("thread");
      await invalidateRecallThread(cache, user.id, id);
      return c.body(null, 204);
    },
  );

  return app;
}

function toThread(row: Omit<ThreadRow, "cursor_key">): Thread {
  return {
    id: row.id,
    title: row.title,
    status: row.status,
    last_message_at: new Date(row.last_message_at).toISOString(),
    created_at: new Date(row.created_at).toISOString(),
  };
}

async function listThreads(
  db: Database,
  user: AuthUser,
  p: PageArgs,
  budget: Budget,
): Promise<Page<Thread>> {
  const rows = await db.asUser(user, (tx) => q.threadsPage(tx, p), budget);
  return toPage(threadKeys, p, rows, toThread);
}

/** The thread, or null when it is not the caller's (or deleted): cached as such for a while. */
async function getThread(
  db: Database,
  user: AuthUser,
  id: string,
  budget: Budget,
): Promise<Thread | null> {
  const [row] = await db.asUser(user, (tx) => q.thread(tx, id), budget);
  return row ? toThread(row) : null;
}

/** A page, or null when the thread is not the caller's (one statement either way). */
async function listMessages(
  db: Database,
  user: AuthUser,
  threadId: string,
  p: PageArgs,
  budget: Budget,
): Promise<Page<Message> | null> {
  const rows = await db.asUser(user, (tx) => q.messagesPage(tx, threadId, p), budget);
  if (!rows.length) return null;
  const messages = rows.filter((r): r is MessageRow & { id: string } => r.id !== null);
  return toPage(messageKeys, p, messages, (r) => ({
    id: r.id,
    thread_id: r.thread_id,
    role: r.role,
    type: r.type,
    content: r.content,
    candidate_json: r.candidate_json ?? null,
    created_at: new Date(r.created_at).toISOString(),
  }));
}
