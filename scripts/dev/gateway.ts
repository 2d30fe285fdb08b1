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
 * Builds the gateway's fetch handler: every app of {@link functionApps} from `options.deps`,
 * and the JWKS `options.jwks` served at `/auth/v1/.well-known/jwks.json`.
 */
export async function createGateway(
  options: { deps: Deps; jwks?: unknown },
): Promise<
  { fetch: (req: Request, info?: Deno.ServeHandlerInfo) => Promise<Response>; slugs: string[] }
> {
  const toml = parse(await Deno.readTextFile(`${repoRoot}/supabase/config.toml`)) as {
    functions?: Record<string, { verify_jwt?: boolean }>;
  };
  const mounted = new Map<string, Mounted>();
  const { deps } = options;
  for (const [slug, createApp] of Object.entries(functionApps)) {
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
    const headers = new Headers(req.headers);
    // The client's address as each trusted proxy passes it on, so every `CLIENT_IP_HEADER`
    // reads the socket's peer: `cf-connecting-ip` replaced (Cloudflare, hosted Supabase),
    // `x-real-ip` replaced (nginx), and the peer appended to `x-forwarded-for` after whatever
    // the client sent there (Kong). shared/http/client_ip.ts reads the configured one.
    headers.delete("cf-connecting-ip");
    headers.delete("x-real-ip");
    if (info && "hostname" in info.remoteAddr) {
      const peer = info.remoteAddr.hostname;
      headers.set("cf-connecting-ip", peer);
      headers.set("x-real-ip", peer);
      const sent = headers.get("x-forwarded-for");
      headers.set("x-forwarded-for", sent ? `${sent}, ${peer}` : peer);
    }
    if (!headers.has("x-request-id")) headers.set("x-request-id", requestId);
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
