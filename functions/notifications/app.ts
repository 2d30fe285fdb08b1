/**
 * `notifications`: the caller's notifications, newest first (keyset pages, with the unread
 * count), and marking them read, by ids or all at once. Rows are written by background
 * jobs (persona replies, daily digests); RLS keeps each user to their own.
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";
import { requireUser } from "../../shared/auth.ts";
import { config } from "../../shared/config.ts";
import { decodeCursor, encodeCursor, keyFormats } from "../../shared/cursor.ts";
import { asUser } from "../../shared/db.ts";
import { bearerAuth, createApp } from "../../shared/http.ts";
import { rateLimit, RateLimiter } from "../../shared/ratelimit.ts";
import { uuid } from "../../shared/schemas.ts";

const maxLimit = 100;
const maxIdsPerCall = 100;
const limiter = new RateLimiter({
  name: "notifications",
  windows: [{ limit: config.limits.notificationsPerMin, windowS: 60 }],
  failOpen: true, // cheap, own-rows-only reads and writes
});

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

export const app = createApp("notifications");

const listRoute = createRoute({
  method: "get",
  path: "/",
  summary: "The caller's notifications, newest first, with the unread count",
  security: bearerAuth,
  middleware: [requireUser(), rateLimit(limiter, (c) => c.var.user!.id)] as const,
  request: { query: ListQuery },
  responses: {
    200: {
      description: "a page",
      content: { "application/json": { schema: NotificationPage } },
    },
  },
});

interface Row {
  id: string;
  kind: string;
  payload: Record<string, unknown>;
  read_at: Date | null;
  created_at: Date;
  cursor_key: string;
}

app.openapi(listRoute, async (c) => {
  const { limit, cursor } = c.req.valid("query");
  const after = cursor ? decodeCursor(cursor, "notifications", keyFormats.timestamptz) : null;
  const user = c.var.user!;
  // One statement: the page (limit + 1 rows) and the unread count.
  const [{ rows, unread_count }] = await asUser(
    user,
    (tx) =>
      tx<{ rows: Row[] | null; unread_count: number }[]>`
      select
        (select json_agg(page order by page.created_at desc, page.id desc) from (
           select n.id, n.kind, n.payload, n.read_at, n.created_at, n.created_at::text as cursor_key
           from public.notifications n
           where n.user_id = ${user.id}
             -- Scalar sub-selects (InitPlans): under RLS a bare coalesce is not leakproof
             -- and would demote the keyset from an index condition to a filter.
             and (n.created_at, n.id) < (
               (select coalesce(${after?.key ?? null}::text::timestamptz, 'infinity')),
               (select coalesce(${
        after?.id ?? null
      }::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff')))
           order by n.created_at desc, n.id desc
           limit ${limit + 1}
         ) page) as rows,
        (select count(*)::int from public.notifications n
          where n.user_id = ${user.id} and n.read_at is null) as unread_count`,
    c.var.budget,
  );
  const all = rows ?? [];
  const items = all.slice(0, limit);
  const last = items.at(-1);
  c.header("cache-control", "private, no-store");
  return c.json({
    items: items.map((r) => ({
      id: r.id,
      kind: r.kind,
      payload: r.payload,
      read_at: r.read_at ? new Date(r.read_at).toISOString() : null,
      created_at: new Date(r.created_at).toISOString(),
    })),
    next_cursor: all.length > limit && last
      ? encodeCursor("notifications", last.cursor_key, last.id)
      : null,
    unread_count,
  }, 200);
});

const readRoute = createRoute({
  method: "post",
  path: "/read",
  summary: "Mark notifications read: `{ids}` or `{all: true}`",
  security: bearerAuth,
  middleware: [requireUser(), rateLimit(limiter, (c) => c.var.user!.id)] as const,
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
  // One statement; the count's snapshot predates the update, so subtract what it marked.
  const [result] = await asUser(
    user,
    (tx) =>
      tx<{ updated: number; unread_count: number }[]>`
      with marked as (
        update public.notifications set read_at = now()
        where user_id = ${user.id} and read_at is null
          and (${all === true} or id = any (${ids ?? []}::uuid[]))
        returning 1
      )
      select (select count(*)::int from marked) as updated,
             (select count(*)::int from public.notifications
               where user_id = ${user.id} and read_at is null)
             - (select count(*)::int from marked) as unread_count`,
    c.var.budget,
  );
  return c.json(result, 200);
});
