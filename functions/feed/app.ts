/**
 * `feed`: the home timeline. `for-you` (hot posts, the same for everyone: cached and
 * coalesced, with the caller's likes laid over it) and `following` (newest posts of the
 * people the caller follows: cached per user). One SQL statement per page either way.
 *
 * ETags are built from what a page is made of, not by hashing its body: the cache entry's
 * version (a digest of its rows, computed once per entry by the cache), the page's cache key
 * (kind, limit, cursor; the user for `following`), and for `for-you` the caller's likes laid
 * over it. So `If-None-Match` answers 304 without building or serializing the page.
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { AuthUser } from "../../shared/auth/auth.ts";
import type { Budget } from "../../shared/http/budget.ts";
import { contentVersion, type TwoTierCache } from "../../shared/resilience/cache.ts";
import { keyFormats } from "../../shared/data/cursor.ts";
import type { Database } from "../../shared/data/db.ts";
import type { Deps } from "../../shared/deps.ts";
import { type App, bearerAuth, createFunctionApp } from "../../shared/http/app.ts";
import { type PageArgs, pageArgs, pageRows, toPage } from "../../shared/data/keyset.ts";
import { rateLimit } from "../../shared/resilience/ratelimit.ts";
import { type FeedConfig, feedConfig } from "./config.ts";
import * as q from "./queries.ts";
import type { FeedRow } from "./queries.ts";

const maxLimit = 50;

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

const forYouKeys = { tag: "for-you", key: keyFormats.float8 };
const followingKeys = { tag: "following", key: keyFormats.timestamptz };

/**
 * The shape of a page built from rows (`toItem`, `toPage`): part of every ETag. Bump it when
 * the same rows and likes would make a different body.
 */
const pageFormat = 1;

/** A page's ETag, and its JSON body (built only when the ETag doesn't match). */
interface Built {
  etag: string;
  body: () => string;
}

/**
 * A cached page serialized once: each item's JSON up to its `liked_by_me` value (the last
 * field), and the rest of the page. The caller's likes are the only per-request part, so a
 * warm page is one string concatenation, not a page of objects built and stringified.
 */
interface Serialized {
  items: string[];
  tail: string;
}

/**
 * Per cache entry (the cache hands out the same rows array while the entry lives) and page
 * shape: entries and their JSON go together.
 */
const serializedPages = new WeakMap<readonly FeedRow[], Serialized>();

function serialized(keys: typeof forYouKeys, p: PageArgs, rows: readonly FeedRow[]): Serialized {
  let page = serializedPages.get(rows);
  if (!page) {
    const { items, next_cursor } = toPage(keys, p, rows, (row) => toItem(row, false));
    page = {
      // `liked_by_me` is the last field: cut its `false}` off, the caller's value goes there.
      items: items.map((item) => JSON.stringify(item).slice(0, -"false}".length)),
      tail: `],"next_cursor":${JSON.stringify(next_cursor)}}`,
    };
    serializedPages.set(rows, page);
  }
  return page;
}

/** The page's body with `liked(i)` as item i's `liked_by_me`. */
function pageBody(page: Serialized, liked: (i: number) => boolean): string {
  let body = '{"items":[';
  for (let i = 0; i < page.items.length; i++) {
    body += (i ? "," : "") + page.items[i] + (liked(i) ? "true}" : "false}");
  }
  return body + page.tail;
}

/** Where pages are read from, and how long they are cached. */
interface Source {
  db: Database;
  cache: TwoTierCache;
  settings: FeedConfig;
}

/** The `feed` app on `deps`. Throws at once when a `FEED_*` variable is bad. */
export function createApp(deps: Deps): App {
  const settings = feedConfig(deps.env);
  const source: Source = { db: deps.db, cache: deps.cache, settings };
  const limiter = deps.rateLimiter({
    name: "feed",
    windows: [{ limit: settings.perMin, windowS: 60 }],
    failOpen: true, // a cheap read: better served unlimited for a moment than refused
    leased: true, // tokens leased in blocks: a warm read costs no Redis command
  });
  const app = createFunctionApp("feed", deps);
  const tagPrefix = `${pageFormat}\n${deps.config.version}\n`;

  const route = createRoute({
    method: "get",
    path: "/",
    summary: "A page of the caller's feed",
    security: bearerAuth,
    middleware: [
      deps.auth.requireUser(),
      rateLimit(limiter, (c) => c.var.user!.id),
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
      ? await forYouPage(source, user, limit, cursor, c.var.budget)
      : await followingPage(source, user, limit, cursor, c.var.budget);
    const etag = `"${contentVersion(tagPrefix + page.etag)}"`;
    c.header("cache-control", "private, no-cache");
    c.header("etag", etag);
    if (matches(c.req.header("if-none-match"), etag)) return c.body(null, 304);
    return c.body(page.body(), 200, { "content-type": "application/json" });
  });

  return app;
}

/** Shared hot page (cached, one load per key at a time) plus the caller's likes. */
async function forYouPage(
  { db, cache, settings }: Source,
  user: AuthUser,
  limit: number,
  cursor: string | undefined,
  budget: Budget,
): Promise<Built> {
  const p = pageArgs(forYouKeys, limit, cursor);
  // The same for everyone; served stale for one more TTL while a single refresh runs, so the
  // page never expires under everyone's feet at once.
  const ttlS = settings.forYouTtlS;
  const key = `feed:for-you:${limit}:${cursor ?? ""}`;
  const { value: rows, version } = await cache.getVersioned(
    key,
    { ttlS, staleS: ttlS, invalidation: "ttl" },
    () => db.asUser(null, (tx) => q.forYou(tx, p), budget),
  );
  const shown = pageRows(p, rows);
  const ids = shown.map((r) => r.id);
  const liked = ids.length ? await db.asUser(user, (tx) => q.likedPostIds(tx, ids), budget) : [];
  const likedIds = new Set(liked.map((r) => r.id));
  // The overlay, exactly: which of the shown rows the caller likes, by position.
  let overlay = "";
  for (const row of shown) overlay += likedIds.has(row.id) ? "1" : "0";
  return {
    etag: `${key}\n${version}\n${overlay}`,
    body: () => pageBody(serialized(forYouKeys, p, rows), (i) => likedIds.has(shown[i].id)),
  };
}

/** Posts of followed users, newest first, per-user cache. */
async function followingPage(
  { db, cache, settings }: Source,
  user: AuthUser,
  limit: number,
  cursor: string | undefined,
  budget: Budget,
): Promise<Built> {
  const p = pageArgs(followingKeys, limit, cursor);
  const key = `feed:following:${user.id}:${limit}:${cursor ?? ""}`;
  const { value: rows, version } = await cache.getVersioned(
    key,
    { ttlS: settings.followingTtlS, invalidation: "ttl" },
    () => db.asUser(user, (tx) => q.following(tx, p), budget),
  );
  // The caller's likes are in the rows (and so in the version): the entry is the caller's own.
  return {
    etag: `${key}\n${version}`,
    body: () => {
      const shown = pageRows(p, rows);
      return pageBody(serialized(followingKeys, p, rows), (i) => shown[i].liked_by_me === true);
    },
  };
}

/**
 * Whether an `If-None-Match` header names `etag` (weak comparison, RFC 9110 13.1.2: `W/`
 * ignored), or is `*`.
 */
function matches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === "*") return true;
  for (const tag of header.split(",")) {
    const t = tag.trim();
    if ((t.startsWith("W/") ? t.slice(2) : t) === etag) return true;
  }
  return false;
}

function toItem(row: FeedRow, liked: boolean): z.infer<typeof FeedItem> {
  return {
    id: row.id,
    body: row.body,
    media_url: row.media_url,
    thumbnail_url: row.thumbnail_url,
    like_count: row.like_count,
    reply_count: row.reply_count,
    created_at: new Date(row.created_at).toISOString(),
    author: row.author,
    liked_by_me: liked,
  };
}
