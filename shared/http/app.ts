/**
 * The app factory every function uses: request id, Server-Timing, CORS, body limit, a hard
 * time budget, problem+json errors (including 404/405 and validation failures), and the
 * function's OpenAPI document at `/<slug>/openapi.json`.
 *
 * @module
 */
import { OpenAPIHono, type z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { contextStorage } from "hono/context-storage";
import { cors } from "hono/cors";
import { requestId } from "hono/request-id";
import { routePath } from "hono/route";
import { timing } from "hono/timing";
import { admit, admitCaller, type Caller } from "./admission.ts";
import { type AuthUser, type AuthVariables, bearerToken } from "../auth/auth.ts";
import { bodyGuard } from "./body.ts";
import { type Budget, withBudget } from "./budget.ts";
import type { Deps } from "../deps.ts";
import { metrics } from "./metrics.ts";
import { ProblemError, problemResponse, toProblem } from "./problem.ts";
import { anonymousReads } from "../resilience/ratelimit.ts";
import { type RequestUsage, usageTiming } from "./timing.ts";

/** The Hono environment of every function. */
export type AppEnv = {
  Variables: AuthVariables & { requestId: string; budget: Budget; usage: RequestUsage };
};

/** A function's app. */
export type App = OpenAPIHono<AppEnv>;

/** Options of one function. */
export interface AppOptions {
  /** Total time budget per request (ms); defaults to `REQUEST_BUDGET_MS`. */
  budgetMs?: number;
  /** Largest accepted request body (bytes), or one per request; defaults to `MAX_BODY_BYTES`. */
  maxBodyBytes?: number | ((c: Context) => number);
  /** OpenAPI document title. */
  title?: string;
  /** Admission control: adaptive limit and per-caller caps (default true; health opts out). */
  shed?: boolean;
  /**
   * Whether a request body is read without a signed-in user (default false: every route that
   * takes a body needs a user, so one without a valid user token is a 401 before a byte of it
   * is read). `events` (anonymous senders) and `jobs-worker` (secret key) set it.
   */
  anonymousBodies?: boolean;
}

/**
 * Who is calling, from the headers alone, before the body is read: the verified user (the
 * token check is cached per isolate), else null; `problem` is the 401 a bad token or header
 * earns (project keys mean anonymous). Kept in the context as `caller`.
 */
async function whoCalls(
  deps: Deps,
  c: Context,
): Promise<{ user: AuthUser | null; problem?: unknown }> {
  const known = c.get("caller" as never) as
    | { user: AuthUser | null; problem?: unknown }
    | undefined;
  if (known) return known;
  let who: { user: AuthUser | null; problem?: unknown };
  try {
    const token = bearerToken(c.req.raw);
    who = { user: token ? await deps.auth.identify(token) : null };
  } catch (problem) {
    who = { user: null, problem };
  }
  c.set("caller" as never, who as never);
  return who;
}

/**
 * Per-caller caps key on the verified user, and on the client IP only for anonymous callers:
 * many signed-in users share an IP behind a NAT. A token that doesn't verify counts against
 * its IP (the route answers it 401).
 */
async function identify(deps: Deps, c: Context): Promise<Caller> {
  const { user } = await whoCalls(deps, c);
  if (user) return { key: `user:${user.id}`, cap: deps.config.admission.perUser };
  return { key: `ip:${deps.clientIp(c)}`, cap: deps.config.admission.perAnonIp };
}

/**
 * Middleware: on an app whose bodies need a user, a request with a body and no valid user
 * token is a 401 before the body is read (the token is checked from the headers, cached).
 */
function bodiesNeedUser(deps: Deps): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.raw.body && c.req.method !== "OPTIONS") {
      const { user, problem } = await whoCalls(deps, c);
      if (!user) {
        c.req.raw.body.cancel().catch(() => {});
        throw problem ??
          new ProblemError(401, "unauthorized", "a bearer access token is required", {
            headers: { "www-authenticate": `Bearer error="invalid_token"` },
          });
      }
    }
    await next();
  };
}

/**
 * Builds the Hono app of the function `slug`, mounted at `/<slug>`, on `deps` (its settings,
 * the isolate's admission and body budget, token verification). Checks at once that token
 * keys are configured: a function without them refuses to boot.
 */
export function createFunctionApp(slug: string, deps: Deps, options: AppOptions = {}): App {
  const { config } = deps;
  deps.auth.requireKeys();
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) throw validationProblem(result.error.issues, result.target);
    },
  }).basePath(`/${slug}`) as unknown as App;

  for (const [, middleware] of functionMiddleware(slug, deps, options)) app.use(middleware);

  app.onError((err, c) => {
    const problem = toProblem(err);
    if (problem.code === "internal") {
      // Overload answers (503/504) are counted in metrics; only the unexpected is logged.
      console.error(JSON.stringify({
        msg: "request failed",
        request_id: c.get("requestId"),
        path: c.req.path,
        error: String(problem.options.cause ?? err),
      }));
    }
    return problemResponse(c, problem);
  });
  app.notFound((c) => {
    const allowed = allowedMethods(app, c);
    if (allowed.length) {
      c.header("allow", allowed.join(", "));
      return problemResponse(
        c,
        new ProblemError(
          405,
          "method_not_allowed",
          `${c.req.method} is not allowed here; use ${allowed.join(", ")}`,
        ),
      );
    }
    return problemResponse(
      c,
      new ProblemError(404, "not_found", `no route for ${c.req.method} ${c.req.path}`),
    );
  });
  // Anyone may read it: limited per IP. Generated from the routes registered on `app` at the
  // first request (the function adds its routes after this call), then served as that same
  // string: `doc31` would generate it again on every request.
  app.use("/openapi.json", anonymousReads(deps.anonReads, deps.clientIp));
  let document: string | undefined;
  app.get("/openapi.json", (c) => {
    document ??= JSON.stringify(app.getOpenAPI31Document({
      openapi: "3.1.0",
      info: { title: options.title ?? `rockout-edge ${slug}`, version: config.version },
    }));
    return c.body(document, 200, { "content-type": "application/json" });
  });
  return app;
}

/**
 * Every function's middleware, in order, by name: what {@link createFunctionApp} applies to
 * all routes (scripts/bench/middleware.ts measures them one by one from this list).
 */
export function functionMiddleware(
  slug: string,
  deps: Deps,
  options: AppOptions = {},
): [name: string, middleware: MiddlewareHandler][] {
  const { config } = deps;
  const chain: [string, MiddlewareHandler][] = [
    ["contextStorage", contextStorage()],
    ["requestId", requestId()],
    ["accessLog", accessLog(slug, config.logRequests)],
    // CORS first: every answer below, 408/413/503 included, carries its headers.
    [
      "cors",
      cors({
        origin: config.corsOrigins,
        allowHeaders: [
          "authorization",
          "x-client-info",
          "apikey",
          "content-type",
          "if-none-match",
          "idempotency-key",
        ],
        allowMethods: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        exposeHeaders: [
          "x-request-id",
          "server-timing",
          "etag",
          "retry-after",
          "ratelimit",
          "ratelimit-policy",
        ],
        maxAge: 86400,
      }),
    ],
    ["timing", timing({ totalDescription: "total", crossOrigin: true })],
    ["usageTiming", usageTiming()],
  ];
  // Before a byte of the body is read: shed on overload (503), the caller's own in-flight cap
  // (429, held until answered: one client has at most its cap of bodies in flight), a user
  // for apps whose bodies need one (401). Then the body (415, 413, the isolate's body budget
  // 503, deadlines 408), and only then a work slot: a slow upload holds none.
  if (options.shed !== false) {
    chain.push([
      "admitCaller",
      admitCaller(deps.admission, { identify: (c) => identify(deps, c) }),
    ]);
  }
  if (!options.anonymousBodies) chain.push(["bodiesNeedUser", bodiesNeedUser(deps)]);
  chain.push([
    "bodyGuard",
    bodyGuard({
      maxBytes: options.maxBodyBytes ?? config.maxBodyBytes,
      ...config.body,
      budget: deps.bodyBudget,
    }),
  ]);
  if (options.shed !== false) {
    chain.push([
      "admit",
      admit(deps.admission, {
        excludedMs: (c) => {
          // Left out of the latency samples: time waiting on paid APIs (not our capacity), and
          // time in the pool's search lane (its wait and its statements). That lane is bounded
          // on its own (a quarter of the pool, 300 ms statements, 100 ms wait, 2 per user), so
          // slow searches can't hold more than it; fed to the gradient, their 100-400 ms would
          // shrink the limit to its floor and shed every reader (bench_starvation). The wait
          // for a default-lane connection stays in: queueing for the shared pool is exactly
          // the overload the limit must see. Nor does lane time hold a slot (outsideAdmission).
          const usage = c.get("usage");
          return usage ? usage.upstream.ms + usage.searchLane.ms : 0;
        },
      }),
    ]);
  }
  chain.push(["budget", withBudget(options.budgetMs ?? config.requestBudgetMs)]);
  return chain;
}

/**
 * Counts and times every request (by route pattern, never raw paths: bounded cardinality)
 * and writes one JSON log line per request. Tokens, bodies and queries are never logged.
 */
function accessLog(slug: string, logRequests: boolean): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const start = performance.now();
    await next();
    const ms = performance.now() - start;
    const route = c.res.status === 404 || c.res.status === 405
      ? "unmatched"
      : routePath(c, -1) || "unmatched";
    const labels = { function: slug, method: c.req.method, route, status: c.res.status };
    metrics.inc("http_requests_total", labels);
    metrics.observe("http_request_duration_ms", { function: slug, route }, ms);
    if (!logRequests) return;
    const usage = c.get("usage");
    console.log(JSON.stringify({
      msg: "request",
      request_id: c.get("requestId"),
      function: slug,
      method: c.req.method,
      route,
      status: c.res.status,
      ms: Math.round(ms * 10) / 10,
      db_ms: usage ? Math.round(usage.db.ms * 10) / 10 : undefined,
      redis_ms: usage ? Math.round(usage.redis.ms * 10) / 10 : undefined,
      upstream_ms: usage ? Math.round(usage.upstream.ms * 10) / 10 : undefined,
      user: c.get("user")?.id,
    }));
  };
}

/** Methods with a route matching this path (for 405 + Allow). */
function allowedMethods(app: App, c: Context): string[] {
  const methods = new Set<string>();
  for (const route of app.routes) {
    if (route.method === "ALL" || route.method === c.req.method) continue;
    const pattern = new RegExp(
      "^" + route.path.replace(/\/:[^/]+/g, "/[^/]+").replace(/\*/g, ".*") + "$",
    );
    if (pattern.test(c.req.path)) methods.add(route.method);
  }
  return [...methods].sort();
}

interface Issue {
  path: PropertyKey[];
  message: string;
}

/** A 400 naming every invalid field of a request part (`query`, `json`, `param`…). */
function validationProblem(issues: readonly Issue[], target: string): ProblemError {
  const params = issues.map((i) => ({
    name: i.path.length ? i.path.map(String).join(".") : target,
    reason: i.message,
  }));
  const detail = params.map((p) => `${p.name}: ${p.reason}`).join("; ");
  return new ProblemError(400, "invalid_parameter", detail, {
    extensions: { invalid_params: params },
  });
}

/** An OpenAPI response with a JSON body (for `createRoute`'s `responses`). */
export function jsonContent<T extends z.ZodType>(schema: T, description: string) {
  return { description, content: { "application/json": { schema } } };
}

/** A required JSON request body (for `createRoute`'s `request`). */
export function jsonBody<T extends z.ZodType>(schema: T) {
  return { body: { content: { "application/json": { schema } }, required: true } };
}

/** The route's security requirement: a bearer access token. */
export const bearerAuth = [{ bearer: [] }];
