/**
 * `notifications`: the caller's notifications, newest first (keyset pages, with the unread
 * count), and marking them read, by ids or all at once. Rows are written by background
 * jobs (persona replies, daily digests); RLS keeps each user to their own.
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";
import { keyFormats } from "../../shared/data/cursor.ts";
import type { Deps } from "../../shared/deps.ts";
import { type App, bearerAuth, createFunctionApp } from "../../shared/http/app.ts";
import { pageArgs, toPage } from "../../shared/data/keyset.ts";
import { rateLimit } from "../../shared/resilience/ratelimit.ts";
import { uuid } from "../../shared/http/schemas.ts";
import { notificationsConfig } from "./config.ts";
import * as q from "./queries.ts";

const maxLimit = 100;
const maxIdsPerCall = 100;

const Notification = z.object({
  id: z.uuid(),
  kind: z.string(),
  payload: z.record(z.string(), z.unknown()),
  read_at: z.string().nullable(),
  created_at: z.string(),
}).openapi("Notification");
const NotificationPage = z.object({
  items: z.array(Notification),
  next_cursor: z.string().nullable(),
  unread_count: z.number().int(),
}).openapi("NotificationPage");

const ListQuery = z.object({
  limit: z.coerce.number().int().min(1).default(20).transform((n) => Math.min(n, maxLimit)),
  cursor: z.string().optional(),
});

const ReadBody = z.object({
  ids: z.array(uuid()).min(1).max(maxIdsPerCall).optional(),
  all: z.literal(true).optional(),
}).superRefine((body, ctx) => {
  if ((body.ids === undefined) === (body.all === undefined)) {
    ctx.addIssue({
      code: "custom",
      path: body.ids ? ["all"] : ["ids"],
      message: "send exactly one of `ids` (1–100 uuids) or `all: true`",
    });
  }
}).openapi("MarkRead");

const ReadResult = z.object({ updated: z.number().int(), unread_count: z.number().int() })
  .openapi("MarkReadResult");

const keys = { tag: "notifications", key: keyFormats.timestamptz };

/** The `notifications` app on `deps`. Throws at once when its variable is bad. */
export function createApp(deps: Deps): App {
  const settings = notificationsConfig(deps.env);
  const limiter = deps.rateLimiter({
    name: "notifications",
    windows: [{ limit: settings.perMin, windowS: 60 }],
    failOpen: true, // cheap, own-rows-only reads and writes
    leased: true, // tokens leased in blocks: a warm read costs no Redis command
  });
  const perUser = rateLimit(limiter, (c) => c.var.user!.id);
  const app = createFunctionApp("notifications", deps);

  const listRoute = createRoute({
    method: "get",
    path: "/",
    summary: "The caller's notifications, newest first, with the unread count",
    security: bearerAuth,
    middleware: [deps.auth.requireUser(), perUser] as const,
    request: { query: ListQuery },
    responses: {
      200: {
        description: "a page",
        content: { "application/json": { schema: NotificationPage } },
      },
    },
  });

  app.openapi(listRoute, async (c) => {
    const { limit, cursor } = c.req.valid("query");
    const p = pageArgs(keys, limit, cursor);
    const user = c.var.user!;
    const [{ rows, unread_count }] = await deps.db.asUser(
      user,
      (tx) => q.page(tx, user.id, p),
      c.var.budget,
    );
    c.header("cache-control", "private, no-store");
    return c.json({
      ...toPage(keys, p, rows ?? [], (r) => ({
        id: r.id,
        kind: r.kind,
        payload: r.payload,
        read_at: r.read_at ? new Date(r.read_at).toISOString() : null,
        created_at: new Date(r.created_at).toISOString(),
      })),
      unread_count,
    }, 200);
  });

  const readRoute = createRoute({
    method: "post",
    path: "/read",
    summary: "Mark notifications read: `{ids}` or `{all: true}`",
    security: bearerAuth,
    middleware: [deps.auth.requireUser(), perUser] as const,
    request: {
      body: { content: { "application/json": { schema: ReadBody } }, required: true },
    },
    responses: {
      200: {
        description: "how many changed, and what is left unread",
        content: { "application/json": { schema: ReadResult } },
      },
    },
  });

  app.openapi(readRoute, async (c) => {
    const { ids, all } = c.req.valid("json");
    const user = c.var.user!;
    const [result] = await deps.db.asUser(
      user,
      (tx) => q.markRead(tx, user.id, ids ?? [], all === true),
      c.var.budget,
    );
    return c.json(result, 200);
  });

  return app;
}
