/**
 * `profiles`: public profiles (one, or up to 100 at once: the cure for the client's N+1),
 * editing your own, followers/following pages, follow/unfollow, and search.
 *
 * Profiles are cached 5 min per profile in the two-tier cache (tag `profile:<id>`); an edit
 * or a follow invalidates the profiles it changed in every isolate before we answer.
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { keyFormats } from "../../shared/data/cursor.ts";
import type { Deps } from "../../shared/deps.ts";
import { type App, bearerAuth, createFunctionApp, jsonContent } from "../../shared/http/app.ts";
import { pageArgs, toPage } from "../../shared/data/keyset.ts";
import { invalidParameter, notFound, ProblemError } from "../../shared/http/problem.ts";
import { rateLimit } from "../../shared/resilience/ratelimit.ts";
import { searchQueryWords } from "../../shared/data/search.ts";
import { plainText, uuid } from "../../shared/http/schemas.ts";
import { profilesConfig } from "./config.ts";
import { ProfileCache, toProfile } from "./profile_cache.ts";
import * as queries from "./queries.ts";
import type { FollowRow } from "./queries.ts";

const maxBatchIds = 100;
const maxPage = 100;
const maxSearch = 100;

const Id = uuid().openapi({ description: "a profile (user) id" });
const Profile = z.object({
  id: z.guid(),
  username: z.string(),
  display_name: z.string().nullable(),
  avatar_url: z.string().nullable(),
  bio: z.string().nullable(),
  follower_count: z.number().int(),
  following_count: z.number().int(),
  created_at: z.string(),
}).openapi("Profile");
const ProfileList = z.object({ items: z.array(Profile) }).openapi("ProfileList");
const FollowEntry = z.object({
  id: z.guid(),
  username: z.string(),
  display_name: z.string().nullable(),
  avatar_url: z.string().nullable(),
  followed_at: z.string(),
}).openapi("FollowEntry");
const FollowPage = z.object({ items: z.array(FollowEntry), next_cursor: z.string().nullable() })
  .openapi("FollowPage");
const SearchHit = z.object({
  id: z.guid(),
  username: z.string(),
  display_name: z.string().nullable(),
  avatar_url: z.string().nullable(),
  follower_count: z.number().int(),
}).openapi("ProfileSearchHit");
const SearchPage = z.object({ items: z.array(SearchHit), next_cursor: z.null() })
  .openapi("ProfileSearchPage");
const FollowState = z.object({
  id: z.guid(),
  following: z.boolean(),
  follower_count: z.number().int(),
}).openapi("FollowState");

const ProfilePatch = z.object({
  username: z.string().regex(/^[a-z0-9_]{3,30}$/, "3–30 of a-z, 0-9 and _").optional(),
  display_name: plainText().trim().min(1).max(80).nullable().optional(),
  bio: plainText().max(500).nullable().optional(),
  avatar_url: z.url({ protocol: /^https?$/ }).max(2048).nullable().optional(),
}).strict().refine((p) => Object.keys(p).length > 0, {
  message: "send at least one of username, display_name, bio, avatar_url",
}).openapi("ProfilePatch");

const IdsQuery = z.object({
  ids: z.string().transform((text, ctx) => {
    // Lowercased before deduplication: one id in two spellings is one id.
    const ids = [
      ...new Set(text.split(",").map((s) => s.trim().toLowerCase()).filter(Boolean)),
    ];
    if (!ids.length) ctx.addIssue({ code: "custom", message: "at least one id" });
    if (ids.length > maxBatchIds) {
      ctx.addIssue({ code: "custom", message: `at most ${maxBatchIds} ids` });
    }
    const bad = ids.find((id) => !z.guid().safeParse(id).success);
    if (bad) ctx.addIssue({ code: "custom", message: `not a uuid: ${bad.slice(0, 40)}` });
    return ids;
  }).openapi({ description: `comma-separated profile ids (at most ${maxBatchIds})` }),
});
const PageQuery = z.object({
  limit: z.coerce.number().int().min(1).default(maxPage).transform((n) => Math.min(n, maxPage)),
  cursor: z.string().optional(),
});
const SearchQuery = z.object({
  // Two letters match half the names: ranking them is work, not a search.
  q: plainText().trim().min(3, "at least 3 characters").max(64),
  limit: z.coerce.number().int().min(1).default(20).transform((n) => Math.min(n, maxSearch)),
});

const followKeys = {
  followers: { tag: "followers", key: keyFormats.timestamptz },
  following: { tag: "following", key: keyFormats.timestamptz },
};

const IdParam = z.object({ id: Id });

/** The signed-in caller: every limit of this function is per user. */
const userKey = (c: Context) => c.var.user!.id;

/** What the routes work with, built once (at boot) in {@link createApp}. */
interface Ctx {
  deps: Deps;
  profiles: ProfileCache;
  limitSearches: MiddlewareHandler;
  limitFollows: MiddlewareHandler;
  limitEdits: MiddlewareHandler;
}

/**
 * The `profiles` app on `deps`. Reads `profiles`' settings at once (a bad value fails here,
 * at boot), builds its per-user limits and the profile cache.
 */
export function createApp(deps: Deps): App {
  const settings = profilesConfig(deps.env);
  const perUser = (name: string, perMin: number, leased = false): MiddlewareHandler =>
    rateLimit(
      deps.rateLimiter({ name, windows: [{ limit: perMin, windowS: 60 }], failOpen: true, leased }),
      userKey,
    );
  const ctx: Ctx = {
    deps,
    // All fail open: an indexed read (a cheap write) is better unlimited for a moment than refused.
    limitSearches: perUser("profile-search", settings.searchPerMin, true), // reads: leased
    limitFollows: perUser("follows", settings.followsPerMin),
    limitEdits: perUser("profile-edits", settings.editsPerMin),
    profiles: new ProfileCache({ cache: deps.cache, db: deps.db, ttlS: settings.cacheTtlS }),
  };

  const app = createFunctionApp("profiles", deps);
  // Static paths before `/{id}`, which would otherwise take "search" and "me" for ids.
  registerSearch(app, ctx);
  registerEditMe(app, ctx);
  registerProfileReads(app, ctx);
  registerFollowPages(app, ctx);
  registerFollows(app, ctx);
  return app;
}

const searchRoute = createRoute({
  method: "get",
  path: "/search",
  summary: "Profiles by name: word prefixes, typo tolerant",
  security: bearerAuth,
  request: { query: SearchQuery },
  responses: {
    200: jsonContent(SearchPage, "best matches first"),
    429: { description: "too many searches in flight for this user" },
    503: { description: "the search took longer than its statement timeout" },
  },
});

/** `GET /search`: per-user rate and in-flight limits, then the pool's search lane. */
function registerSearch(app: App, { deps, limitSearches }: Ctx): void {
  const { auth, db, search: searches } = deps;
  app.openapi({
    ...searchRoute,
    middleware: [auth.requireUser(), limitSearches, ...searches.concurrency(userKey)] as const,
  }, async (c) => {
    const { q, limit } = c.req.valid("query");
    const query = q.toLowerCase();
    const words = searchQueryWords(query, 4);
    const prefixQuery = words.length ? words.map((w) => `${w}:*`).join(" & ") : null;
    const rows = await db.asUser(
      c.var.user,
      (tx) => queries.searchProfiles(tx, query, prefixQuery, limit),
      c.var.budget,
      searches.db,
    ).catch((err) => searches.timeout(err));
    return c.json({
      items: rows.map((r) => ({
        id: r.id,
        username: r.username,
        display_name: r.display_name,
        avatar_url: r.avatar_url,
        follower_count: r.follower_count,
      })),
      next_cursor: null,
    }, 200);
  });
}

const patchMeRoute = createRoute({
  method: "patch",
  path: "/me",
  summary: "Edit your profile",
  security: bearerAuth,
  request: {
    body: { content: { "application/json": { schema: ProfilePatch } }, required: true },
  },
  responses: {
    200: jsonContent(Profile, "the profile after the edit"),
    409: { description: "username taken" },
  },
});

/** A unique violation on an edit: the username is someone else's. */
function usernameProblem(err: unknown): never {
  if ((err as { code?: string })?.code === "23505") {
    throw new ProblemError(409, "conflict", "username: already taken", {
      extensions: { invalid_params: [{ name: "username", reason: "already taken" }] },
    });
  }
  throw err;
}

/** `PATCH /me`: edits the caller's profile, then drops it from every isolate's cache. */
function registerEditMe(app: App, { deps: { auth, db }, profiles, limitEdits }: Ctx): void {
  app.openapi(
    { ...patchMeRoute, middleware: [auth.requireUser(), limitEdits] as const },
    async (c) => {
      const changes = c.req.valid("json");
      const user = c.var.user!;
      const rows = await db.asUser(
        user,
        (tx) => queries.updateProfile(tx, user.id, changes),
        c.var.budget,
      ).catch(usernameProblem);
      if (!rows.length) throw notFound("profile");
      await profiles.invalidate(user.id); // committed above; now every isolate forgets the old one
      return c.json(toProfile(rows[0]), 200);
    },
  );
}

const batchRoute = createRoute({
  method: "get",
  path: "/",
  summary: "Up to 100 profiles at once, in the order asked (unknown ids left out)",
  security: bearerAuth,
  request: { query: IdsQuery },
  responses: { 200: jsonContent(ProfileList, "the profiles found") },
});

const oneRoute = createRoute({
  method: "get",
  path: "/{id}",
  summary: "One profile",
  security: bearerAuth,
  request: { params: IdParam },
  responses: {
    200: jsonContent(Profile, "the profile"),
    404: { description: "no such profile" },
  },
});

/** `GET /?ids=` and `GET /{id}`: profiles from the cache (misses read in one query). */
function registerProfileReads(app: App, { deps: { auth }, profiles }: Ctx): void {
  app.openapi({ ...batchRoute, middleware: [auth.requireUser()] as const }, async (c) => {
    const { ids } = c.req.valid("query");
    const items = await profiles.get(ids, c.var.budget);
    c.header("cache-control", "private, no-cache");
    return c.json({ items }, 200);
  });

  app.openapi({ ...oneRoute, middleware: [auth.requireUser()] as const }, async (c) => {
    const { id } = c.req.valid("param");
    const [profile] = await profiles.get([id], c.var.budget);
    if (!profile) throw notFound("profile");
    c.header("cache-control", "private, no-cache");
    return c.json(profile, 200);
  });
}

const followPageRoute = (direction: "followers" | "following") =>
  createRoute({
    method: "get",
    path: `/{id}/${direction}`,
    summary: direction === "followers" ? "Who follows this profile" : "Whom this profile follows",
    description: "Newest first, keyset-paged (100 a page).",
    security: bearerAuth,
    request: { params: IdParam, query: PageQuery },
    responses: {
      200: jsonContent(FollowPage, "a page"),
      404: { description: "no such profile" },
    },
  });

const followPageRoutes = {
  followers: followPageRoute("followers"),
  following: followPageRoute("following"),
};

/** `GET /{id}/followers` and `GET /{id}/following`: newest first, keyset-paged. */
function registerFollowPages(app: App, { deps: { auth, db } }: Ctx): void {
  for (const direction of ["followers", "following"] as const) {
    const route = followPageRoutes[direction];
    app.openapi({ ...route, middleware: [auth.requireUser()] as const }, async (c) => {
      const { id } = c.req.valid("param");
      const { limit, cursor } = c.req.valid("query");
      const p = pageArgs(followKeys[direction], limit, cursor);
      const rows = await db.asUser(
        c.var.user,
        (tx) => queries.followPage(tx, direction, id, p),
        c.var.budget,
      );
      if (!rows.length) throw notFound("profile");
      const found = rows.filter((r): r is FollowRow & { id: string } => r.id !== null);
      return c.json(
        toPage(followKeys[direction], p, found, (r) => ({
          id: r.id,
          username: r.username,
          display_name: r.display_name,
          avatar_url: r.avatar_url,
          followed_at: new Date(r.followed_at).toISOString(),
        })),
        200,
      );
    });
  }
}

const followRoute = (method: "put" | "delete") =>
  createRoute({
    method,
    path: "/{id}/follow",
    summary: method === "put" ? "Follow (idempotent)" : "Unfollow (idempotent)",
    security: bearerAuth,
    request: { params: IdParam },
    responses: {
      200: jsonContent(FollowState, "the state after the call"),
      404: { description: "no such profile" },
    },
  });

const followRoutes = { put: followRoute("put"), delete: followRoute("delete") };

/** A foreign key violation on a follow: the caller has no profile yet. */
function followerProblem(err: unknown): never {
  if ((err as { code?: string })?.code === "23503") {
    throw new ProblemError(409, "conflict", "create your profile before following anyone");
  }
  throw err;
}

/** `PUT` and `DELETE /{id}/follow`: idempotent; both profiles' counts change. */
function registerFollows(app: App, { deps: { auth, db }, profiles, limitFollows }: Ctx): void {
  for (const method of ["put", "delete"] as const) {
    const route = followRoutes[method];
    app.openapi(
      { ...route, middleware: [auth.requireUser(), limitFollows] as const },
      async (c) => {
        const { id } = c.req.valid("param");
        const user = c.var.user!;
        if (id === user.id) throw invalidParameter("id", "you cannot follow yourself");
        const follow = method === "put";
        const rows = await db.asUser(
          user,
          (tx) => queries.setFollow(tx, id, follow),
          c.var.budget,
        ).catch(followerProblem);
        if (!rows.length) throw notFound("profile");
        // Both profiles' counts changed: no isolate may keep serving the old ones.
        await Promise.all([profiles.invalidate(id), profiles.invalidate(user.id)]);
        return c.json({ id, following: follow, follower_count: rows[0].follower_count }, 200);
      },
    );
  }
}
