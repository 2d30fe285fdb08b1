/**
 * `posts`: writing and reading posts, their replies (oldest first, keyset), and the batched
 * like/unlike a client sends after a burst of taps: one RPC, one round trip, exact counts.
 *
 * Nothing here is cached: a post read is one primary-key statement whose counters change
 * all the time, and the feeds' caches are short-lived by design.
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import type { Deps } from "../../shared/deps.ts";
import {
  type App,
  bearerAuth,
  createFunctionApp,
  jsonBody,
  jsonContent,
} from "../../shared/http/app.ts";
import { notFound, ProblemError } from "../../shared/http/problem.ts";
import { enqueueReplyJobs, maxPersonasPerRequest } from "../../shared/domain/reply_jobs.ts";
import { rateLimit } from "../../shared/resilience/ratelimit.ts";
import { plainText, uuid } from "../../shared/http/schemas.ts";
import { postsConfig } from "./config.ts";
import * as q from "./queries.ts";
import {
  maxRepliesPage,
  Post,
  readThread,
  Reply,
  ReplyPage,
  toPost,
} from "../../shared/domain/threads.ts";

const maxLikeIds = 100;

/** 1–2000 characters as Postgres counts them (code points), not only whitespace. */
const Body = plainText()
  .refine((s) => s.trim().length > 0, "must not be empty")
  .refine((s) => [...s].length <= 2000, "at most 2000 characters");
const MediaUrl = z.url({ protocol: /^https?$/ }).max(2048).nullable().optional();

const NewPost = z.object({ body: Body, media_url: MediaUrl, thumbnail_url: MediaUrl }).strict()
  .openapi("NewPost");
const NewReply = z.object({ body: Body }).strict().openapi("NewReply");
const LikeBatch = z.object({
  like: z.array(uuid()).default([]),
  unlike: z.array(uuid()).default([]),
}).strict().superRefine((b, ctx) => {
  const total = new Set(b.like).size + new Set(b.unlike).size;
  if (total === 0) ctx.addIssue({ code: "custom", path: ["like"], message: "no post ids" });
  if (total > maxLikeIds) {
    ctx.addIssue({ code: "custom", path: ["like"], message: `at most ${maxLikeIds} ids in all` });
  }
  const unliked = new Set(b.unlike);
  const both = b.like.find((id) => unliked.has(id));
  if (both) {
    ctx.addIssue({ code: "custom", path: ["unlike"], message: `${both} is also in like` });
  }
}).openapi("LikeBatch");
const LikeState = z.object({
  id: z.guid(),
  like_count: z.number().int(),
  liked_by_me: z.boolean(),
}).openapi("LikeState");
const LikeResult = z.object({
  items: z.array(LikeState),
  not_found: z.array(z.guid()).openapi({ description: "ids of posts you cannot see" }),
}).openapi("LikeResult");

const IdParam = z.object({ id: uuid() });
const PageQuery = z.object({
  limit: z.coerce.number().int().min(1).default(maxRepliesPage)
    .transform((n) => Math.min(n, maxRepliesPage)),
  cursor: z.string().optional(),
});

/**
 * Maps the database's refusals of a write to what the client did wrong. Kept beside the
 * routes, not left to shared/http/problem.ts: that maps 23503 to a generic 409 and 42501 to a 500,
 * while here an invisible post is a 404 and a missing profile a 409 saying so.
 */
function writeProblem(err: unknown, what: string): never {
  const e = err as { code?: string; constraint_name?: string };
  if (e?.code === "42501") throw notFound(what); // RLS: a post you can't see
  if (e?.code === "23503") {
    if (e.constraint_name?.endsWith("post_id_fkey")) throw notFound(what);
    throw new ProblemError(409, "conflict", "create your profile before posting");
  }
  throw err;
}

const GenerateReplies = z.object({
  persona_ids: z.array(uuid()).min(1).max(maxPersonasPerRequest),
}).strict().openapi("GenerateReplies");
const ReplyJobs = z.object({
  post_id: z.guid(),
  jobs: z.array(z.object({
    persona_id: z.guid(),
    job_id: z.string().nullable(),
    state: z.enum(["created", "active", "replied"]),
    status: z.string().nullable(),
  })),
}).openapi("ReplyJobs");

/** The signed-in caller: every limit of this function is per user. */
const userKey = (c: Context) => c.var.user!.id;

/** What the routes work with, built once (at boot) in {@link createApp}. */
interface Ctx {
  deps: Deps;
  limitPosts: MiddlewareHandler;
  limitReplies: MiddlewareHandler;
  limitLikes: MiddlewareHandler;
  limitGenerate: MiddlewareHandler;
}

/**
 * The `posts` app on `deps`. Reads `posts`' settings at once (a bad value fails here, at
 * boot) and builds its per-user limits.
 */
export function createApp(deps: Deps): App {
  const settings = postsConfig(deps.env);
  const perUser = (name: string, perMin: number, failOpen: boolean): MiddlewareHandler =>
    rateLimit(
      deps.rateLimiter({ name, windows: [{ limit: perMin, windowS: 60 }], failOpen }),
      userKey,
    );
  const ctx: Ctx = {
    deps,
    // A cheap write: a moment unlimited beats refusing every post (or reply, or like).
    limitPosts: perUser("posts", settings.postsPerMin, true),
    limitReplies: perUser("replies", settings.repliesPerMin, true),
    limitLikes: perUser("likes", settings.likesPerMin, true),
    // Each job ends in an LLM call: refuse rather than run unlimited.
    limitGenerate: perUser("generate-replies", settings.postsPerMin, false),
  };

  const app = createFunctionApp("posts", deps);
  // Static paths before `/{id}`.
  registerLikes(app, ctx);
  registerPosts(app, ctx);
  registerReplies(app, ctx);
  registerGenerateReplies(app, ctx);
  return app;
}

const likesRoute = createRoute({
  method: "post",
  path: "/likes",
  summary: "Like and unlike many posts at once (idempotent)",
  description: `At most ${maxLikeIds} ids in all; posts you cannot see are listed in not_found.`,
  security: bearerAuth,
  request: jsonBody(LikeBatch),
  responses: { 200: jsonContent(LikeResult, "the counts after the change") },
});

/** `POST /likes`: the whole batch in one round trip; the counts after it, in the order asked. */
function registerLikes(app: App, { deps: { auth, db }, limitLikes }: Ctx): void {
  app.openapi(
    { ...likesRoute, middleware: [auth.requireUser(), limitLikes] as const },
    async (c) => {
      const batch = c.req.valid("json");
      const like = [...new Set(batch.like)];
      const unlike = [...new Set(batch.unlike)];
      const rows = await db.asUser(
        c.var.user,
        (tx) => q.applyLikes(tx, like, unlike),
        c.var.budget,
      );
      const byId = new Map(rows.map((r) => [r.id, r]));
      const asked = [...like, ...unlike];
      return c.json({
        items: asked.filter((id) => byId.has(id)).map((id) => byId.get(id)!),
        not_found: asked.filter((id) => !byId.has(id)),
      }, 200);
    },
  );
}

const publishRoute = createRoute({
  method: "post",
  path: "/",
  summary: "Publish a post",
  security: bearerAuth,
  request: jsonBody(NewPost),
  responses: { 201: jsonContent(Post, "the new post") },
});

const oneRoute = createRoute({
  method: "get",
  path: "/{id}",
  summary: "One post",
  security: bearerAuth,
  request: { params: IdParam },
  responses: {
    200: jsonContent(Post, "the post"),
    404: { description: "no such post (for you)" },
  },
});

/** `POST /` (publish) and `GET /{id}` (one post, as the caller may see it). */
function registerPosts(app: App, { deps: { auth, db }, limitPosts }: Ctx): void {
  app.openapi(
    { ...publishRoute, middleware: [auth.requireUser(), limitPosts] as const },
    async (c) => {
      const input = c.req.valid("json");
      const user = c.var.user!;
      const [row] = await db.asUser(
        user,
        (tx) =>
          q.insertPost(tx, {
            authorId: user.id,
            body: input.body,
            mediaUrl: input.media_url ?? null,
            thumbnailUrl: input.thumbnail_url ?? null,
          }),
        c.var.budget,
      ).catch((err) => writeProblem(err, "profile"));
      const post = toPost(row);
      c.header("location", `/functions/v1/posts/${post.id}`);
      return c.json(post, 201);
    },
  );

  app.openapi({ ...oneRoute, middleware: [auth.requireUser()] as const }, async (c) => {
    const { id } = c.req.valid("param");
    const [row] = await db.asUser(
      c.var.user,
      (tx) => q.post(tx, id),
      c.var.budget,
    );
    if (!row) throw notFound("post");
    return c.json(toPost(row), 200);
  });
}

const repliesRoute = createRoute({
  method: "get",
  path: "/{id}/replies",
  summary: "Replies to a post, oldest first",
  description: `Keyset-paged, ${maxRepliesPage} a page.`,
  security: bearerAuth,
  request: { params: IdParam, query: PageQuery },
  responses: {
    200: jsonContent(ReplyPage, "a page"),
    404: { description: "no such post (for you)" },
  },
});

const replyRoute = createRoute({
  method: "post",
  path: "/{id}/replies",
  summary: "Reply to a post",
  description: "The post's reply_count and replies_updated_at move in the same transaction.",
  security: bearerAuth,
  request: { params: IdParam, ...jsonBody(NewReply) },
  responses: {
    201: jsonContent(Reply, "the new reply"),
    404: { description: "no such post (for you)" },
  },
});

/** `GET /{id}/replies` (a page, oldest first) and `POST /{id}/replies` (reply). */
function registerReplies(app: App, { deps: { auth, db }, limitReplies }: Ctx): void {
  app.openapi({ ...repliesRoute, middleware: [auth.requireUser()] as const }, async (c) => {
    const { id } = c.req.valid("param");
    const { limit, cursor } = c.req.valid("query");
    const thread = await db.asUser(
      c.var.user,
      (tx) => readThread(tx, id, cursor, limit),
      c.var.budget,
    );
    if (!thread) throw notFound("post");
    return c.json(thread.replies, 200);
  });

  app.openapi(
    { ...replyRoute, middleware: [auth.requireUser(), limitReplies] as const },
    async (c) => {
      const { id } = c.req.valid("param");
      const { body } = c.req.valid("json");
      const user = c.var.user!;
      const [row] = await db.asUser(
        user,
        (tx) => q.insertReply(tx, { postId: id, authorId: user.id, body }),
        c.var.budget,
      ).catch((err) => writeProblem(err, "post"));
      if (!row) throw notFound("post");
      return c.json({
        id: row.id,
        post_id: row.post_id,
        author: row.author,
        persona_id: row.persona_id,
        body: row.body,
        like_count: row.like_count,
        created_at: new Date(row.created_at).toISOString(),
      }, 201);
    },
  );
}

const generateRoute = createRoute({
  method: "post",
  path: "/{id}/generate-replies",
  summary: "Ask AI personas to reply to a post (queued; the jobs worker writes the replies)",
  security: bearerAuth,
  request: { params: IdParam, ...jsonBody(GenerateReplies) },
  responses: {
    202: jsonContent(ReplyJobs, "the jobs created, or already active, per persona"),
  },
});

/** `POST /{id}/generate-replies`: queues one job per persona (the jobs worker replies). */
function registerGenerateReplies(app: App, { deps: { auth, db }, limitGenerate }: Ctx): void {
  app.openapi(
    { ...generateRoute, middleware: [auth.requireUser(), limitGenerate] as const },
    async (c) => {
      const { id } = c.req.valid("param");
      const { persona_ids } = c.req.valid("json");
      return c.json(
        await enqueueReplyJobs(db, c.var.user!, id, persona_ids, c.var.budget),
        202,
      );
    },
  );
}
