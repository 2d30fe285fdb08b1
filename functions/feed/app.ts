/**
 * `feed`: the home timeline. `for-you` (hot posts, the same for everyone: cached and
 * coalesced, with the caller's likes laid over it) and `following` (newest posts of the
 * people the caller follows: cached per user). One SQL statement per page either way.
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";
import { etag } from "hono/etag";
import { type AuthUser, requireUser } from "../../shared/auth.ts";
import type { Budget } from "../../shared/budget.ts";
import { cache, cached } from "../../shared/cache.ts";
import { config } from "../../shared/config.ts";
import { decodeCursor, encodeCursor, keyFormats } from "../../shared/cursor.ts";
import { asUser } from "../../shared/db.ts";
import { bearerAuth, createApp } from "../../shared/http.ts";
import { rateLimit, RateLimiter } from "../../shared/ratelimit.ts";

const maxLimit = 50;
const feedLimiter = new RateLimiter({
  name: "feed",
  windows: [{ limit: config.limits.feedPerMin, windowS: 60 }],
  failOpen: true, // a cheap read: better served unlimited for a moment than refused
});

const Author = z.object({
  id: z.uuid(),
  username: z.string(),
  display_name: z.string().nullable(),
  avatar_url: z.string().nullable(),
});
const FeedItem = z.object({
  id: z.uuid(),
  body: z.string(),
  media_url: z.string().nullable(),
  thumbnail_url: z.string().nullable(),
  like_count: z.number().int(),
  reply_count: z.number().int(),
  created_at: z.string(),
  author: Author,
  liked_by_me: z.boolean(),
}).openapi("FeedItem");
const FeedPage = z.object({ items: z.array(FeedItem), next_cursor: z.string().nullable() })
  .openapi("FeedPage");

const FeedQuery = z.object({
  kind: z.enum(["for-you", "following"]).default("for-you"),
  limit: z.coerce.number().int().min(1).default(20).transform((n) => Math.min(n, maxLimit)),
  cursor: z.string().optional(),
});

type Row = Omit<z.infer<typeof FeedItem>, "liked_by_me" | "created_at"> & {
  created_at: string | Date;
  cursor_key: string;
  liked_by_me?: boolean;
};
type Page = z.infer<typeof FeedPage>;

export const app = createApp("feed");

const route = createRoute({
  method: "get",
  path: "/",
  summary: "A page of the caller's feed",
  security: bearerAuth,
  middleware: [
    requireUser(),
    rateLimit(feedLimiter, (c) => c.var.user!.id),
    etag(),
  ] as const,
  request: { query: FeedQuery },
  responses: {
    200: { description: "a page", content: { "application/json": { schema: FeedPage } } },
    304: { description: "not modified (If-None-Match)" },
  },
});

app.openapi(route, async (c) => {
  const { kind, limit, cursor } = c.req.valid("query");
  const user = c.var.user!;
  const page = kind === "for-you"
    ? await forYouPage(user, limit, cursor, c.var.budget)
    : await followingPage(user, limit, cursor, c.var.budget);
  c.header("cache-control", "private, no-cache");
  return c.json(page, 200);
});

/** Shared hot page (cached, one load per key at a time) plus the caller's likes. */
async function forYouPage(
  user: AuthUser,
  limit: number,
  cursor: string | undefined,
  budget: Budget,
): Promise<Page> {
  const after = cursor ? decodeCursor(cursor, "for-you", keyFormats.float8) : null;
  // The same for everyone; served stale for one more TTL while a single refresh runs, so the
  // page never expires under everyone's feet at once.
  const ttlS = config.feed.forYouTtlS;
  const rows = await cache.get(
    `feed:for-you:${limit}:${cursor ?? ""}`,
    { ttlS, staleS: ttlS, invalidation: "ttl" },
    () =>
      asUser(null, (tx) =>
        tx<Row[]>`select * from public.feed_for_you(
          ${limit + 1}, ${after?.key ?? null}::float8, ${after?.id ?? null}::uuid)`, budget),
  );
  const items = rows.slice(0, limit);
  const liked = items.length
    ? await asUser(
      user,
      (tx) =>
        tx<{ id: string }[]>`select id from public.liked_post_ids(${
          items.map((r) => r.id)
        }::uuid[]) as id`,
      budget,
    )
    : [];
  const likedIds = new Set(liked.map((r) => r.id));
  return toPage("for-you", rows, limit, (row) => likedIds.has(row.id));
}

/** Posts of followed users, newest first, per-user cache. */
async function followingPage(
  user: AuthUser,
  limit: number,
  cursor: string | undefined,
  budget: Budget,
): Promise<Page> {
  const after = cursor ? decodeCursor(cursor, "following", keyFormats.timestamptz) : null;
  const rows = await cached(
    `feed:following:${user.id}:${limit}:${cursor ?? ""}`,
    config.feed.followingTtlS,
    () =>
      asUser(
        user,
        (tx) =>
          tx<Row[]>`select * from public.feed_following(
          ${limit + 1}, ${after?.key ?? null}::text::timestamptz, ${after?.id ?? null}::uuid)`,
        budget,
      ),
  );
  return toPage("following", rows, limit, (row) => row.liked_by_me === true);
}

/** `limit + 1` rows in: a page and the cursor of its last item when more follow. */
function toPage(tag: string, rows: Row[], limit: number, liked: (row: Row) => boolean): Page {
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  return {
    items: items.map((row) => ({
      id: row.id,
      body: row.body,
      media_url: row.media_url,
      thumbnail_url: row.thumbnail_url,
      like_count: row.like_count,
      reply_count: row.reply_count,
      created_at: new Date(row.created_at).toISOString(),
      author: row.author,
      liked_by_me: liked(row),
    })),
    next_cursor: rows.length > limit && last ? encodeCursor(tag, last.cursor_key, last.id) : null,
  };
}
