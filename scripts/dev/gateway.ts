/**
 * The local stand-in for `supabase functions serve`: mounts every function's app under
 * `/functions/v1/<slug>`, applies `verify_jwt` from `supabase/config.toml` (401 before the
 * function runs, like the platform), and serves the JWKS like Supabase Auth. Its own
 * refusals (401, 404, 405) are problem+json, like every function's.
 *
 * Every app is built from the one {@link Deps} of the process (as `functions/<slug>/index.ts`
 * builds its own from `Deno.env`): one pool, one Redis client and one admission limit for all
 * of them, as one isolate would have.
 *
 * @module
 */
import { parse } from "smol-toml";
import { bearerToken } from "../../shared/auth/auth.ts";
import type { Deps } from "../../shared/deps.ts";
import type { App } from "../../shared/http/app.ts";
import { problemBody, ProblemError, toProblem } from "../../shared/http/problem.ts";
import { createApp as events } from "../../functions/events/app.ts";
import { createApp as feed } from "../../functions/feed/app.ts";
import { createApp as health } from "../../functions/health/app.ts";
import { createApp as jobsWorker } from "../../functions/jobs-worker/app.ts";
import { createApp as notifications } from "../../functions/notifications/app.ts";
import { createApp as posts } from "../../functions/posts/app.ts";
import { createApp as profiles } from "../../functions/profiles/app.ts";
import { createApp as recall } from "../../functions/recall/app.ts";
import { createApp as recallResolve } from "../../functions/recall-resolve/app.ts";
import { createApp as threadSummary } from "../../functions/thread-summary/app.ts";
import { repoRoot } from "./local_services.ts";

/**
 * Every function, by slug. Static imports: what is mounted is what type-checks, and nothing
 * waits for the environment to be set first. gateway_test.ts checks it against
 * {@link functionSlugs}, so a new function can't be left out.
 */
export const functionApps: Record<string, (deps: Deps) => App> = {
  events,
  feed,
  health,
  "jobs-worker": jobsWorker,
  notifications,
  posts,
  profiles,
  recall,
  "recall-resolve": recallResolve,
  "thread-summary": threadSummary,
};

/** A mounted function. */
interface Mounted {
  slug: string;
  verifyJwt: boolean;
  fetch: (req: Request) => Response | Promise<Response>;
}

/** The slugs with a `functions/<slug>/app.ts`. */
export function functionSlugs(): string[] {
  const slugs: string[] = [];
  for (const entry of Deno.readDirSync(`${repoRoot}/functions`)) {
    try {
      if (entry.isDirectory && Deno.statSync(`${repoRoot}/functions/${entry.name}/app.ts`).isFile) {
        slugs.push(entry.name);
      }
    } catch { /* no app.ts: not a function */ }
  }
  return slugs.sort();
}

/**
 * Builds the gateway's fetch handler: every app of `options.apps` ({@link functionApps} by
 * default) from `options.deps`, and the JWKS `options.jwks` served at
 * `/auth/v1/.well-known/jwks.json`.
 */
export async function createGateway(
  options: { deps: Deps; jwks?: unknown; apps?: Record<string, (deps: Deps) => App> },
): Promise<
  { fetch: (req: Request, info?: Deno.ServeHandlerInfo) => Promise<Response>; slugs: string[] }
> {
  const toml = parse(await Deno.readTextFile(`${repoRoot}/supabase/config.toml`)) as {
    functions?: Record<string, { verify_jwt?: boolean }>;
  };
  const mounted = new Map<string, Mounted>();
  const { deps } = options;
  for (const [slug, createApp] of Object.entries(options.apps ?? functionApps)) {
    const app = createApp(deps);
    mounted.set(slug, {
      slug,
      verifyJwt: toml.functions?.[slug]?.verify_jwt ?? true,
      fetch: (req) => app.fetch(req),
    });
  }
  const jwksBody = JSON.stringify(options.jwks ?? { keys: [] });

  async function fetch(req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> {
    const requestId = crypto.randomUUID();
    try {
      return await route(req, info, requestId);
    } catch (err) {
      // The gateway's own refusals (401, 404, 405) are problem+json like the functions' are.
      return problem(req, toProblem(err), requestId, deps.config.corsOrigins);
    }
  }

  async function route(
    req: Request,
    info: Deno.ServeHandlerInfo | undefined,
    requestId: string,
  ): Promise<Response> {
    const url = new URL(req.url);
    if (!gatewayMethods.includes(req.method)) {
      // TRACE, CONNECT and the like: a Request can't even be built with them (fetch forbids
      // them), and no function serves them.
      throw new ProblemError(
        405,
        "method_not_allowed",
        `${req.method.slice(0, 20)} is not allowed; use ${gatewayMethods.join(", ")}`,
        { headers: { allow: gatewayMethods.join(", ") } },
      );
    }
    if (url.pathname === "/auth/v1/.well-known/jwks.json") {
      return new Response(jwksBody, { headers: { "content-type": "application/json" } });
    }
    const match = url.pathname.match(/^\/functions\/v1\/([^/]+)(\/.*)?$/);
    const fn = match ? mounted.get(match[1]) : undefined;
    if (!fn) throw new ProblemError(404, "not_found", "requested function was not found");
    if (fn.verifyJwt && req.method !== "OPTIONS") {
      const token = bearerToken(req);
      if (!token) {
        throw new ProblemError(401, "unauthorized", "missing authorization header", {
          headers: { "www-authenticate": "Bearer" },
        });
      }
      if (token.startsWith("sb_")) {
        // What the platform's verify_jwt does with a publishable or secret key: not a JWT.
        throw new ProblemError(
          401,
          "unauthorized",
          "API keys are not JWTs: this function needs a signed-in user's access token",
          { headers: { "www-authenticate": `Bearer error="invalid_token"` } },
        );
      }
      await deps.auth.verifyJwtOnce(token);
    }
    url.pathname = `/${fn.slug}${match![2] ?? ""}`;
    // The client's address as each trusted proxy passes it on, so every `CLIENT_IP_HEADER`
    // reads the socket's peer: `cf-connecting-ip` replaced (Cloudflare, hosted Supabase),
    // `x-real-ip` replaced (nginx), and the peer appended to `x-forwarded-for` after whatever
    // the client sent there (Kong). shared/http/client_ip.ts reads the configured one.
    // Built as a list: `new Request` copies a `Headers` object once more (2-3x slower).
    const headers: [string, string][] = [];
    const peer = info && "hostname" in info.remoteAddr ? info.remoteAddr.hostname : undefined;
    let forwardedFor: string | undefined;
    let hasRequestId = false;
    for (const [name, value] of req.headers) {
      if (name === "cf-connecting-ip" || name === "x-real-ip") continue;
      if (name === "x-forwarded-for" && peer) {
        forwardedFor = value;
        continue;
      }
      if (name === "x-request-id") hasRequestId = true;
      headers.push([name, value]);
    }
    if (peer) {
      headers.push(["cf-connecting-ip", peer], ["x-real-ip", peer]);
      headers.push(["x-forwarded-for", forwardedFor ? `${forwardedFor}, ${peer}` : peer]);
    }
    if (!hasRequestId) headers.push(["x-request-id", requestId]);
    return await fn.fetch(
      new Request(url, { method: req.method, headers, body: req.body, signal: req.signal }),
    );
  }
  return { fetch, slugs: [...mounted.keys()] };
}

/** Methods the gateway passes on to functions. */
const gatewayMethods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/** A problem+json answer of the gateway itself, with CORS so browsers can read it. */
function problem(
  req: Request,
  problem: ProblemError,
  requestId: string,
  corsOrigins: Deps["config"]["corsOrigins"],
): Response {
  const headers = new Headers({
    "content-type": "application/problem+json",
    "x-request-id": requestId,
    ...problem.options.headers,
  });
  const origin = req.headers.get("origin");
  if (corsOrigins === "*") headers.set("access-control-allow-origin", "*");
  else if (origin && corsOrigins.includes(origin)) {
    headers.set("access-control-allow-origin", origin);
    headers.set("vary", "origin");
  }
  headers.set("access-control-expose-headers", "x-request-id");
  const body = req.method === "HEAD" ? null : JSON.stringify(problemBody(problem, requestId));
  return new Response(body, { status: problem.status, headers });
}
