/**
 * The local stand-in for `supabase functions serve`: mounts every `functions/<slug>/app.ts`
 * under `/functions/v1/<slug>`, applies `verify_jwt` from `supabase/config.toml` (401 before
 * the function runs, like the platform), and serves the JWKS like Supabase Auth. Its own
 * refusals (401, 404, 405) are problem+json, like every function's.
 * Functions must be imported after the environment is set: their config is parsed at load.
 *
 * @module
 */
import { parse } from "smol-toml";
import { bearerToken, verifyJwtOnce } from "../../shared/auth.ts";
import { config } from "../../shared/config.ts";
import { problemBody, ProblemError, toProblem } from "../../shared/problem.ts";
import { repoRoot } from "./local_services.ts";

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

/** Builds the gateway's fetch handler. */
export async function createGateway(
  options: { jwks?: unknown } = {},
): Promise<
  { fetch: (req: Request, info?: Deno.ServeHandlerInfo) => Promise<Response>; slugs: string[] }
> {
  const toml = parse(await Deno.readTextFile(`${repoRoot}/supabase/config.toml`)) as {
    functions?: Record<string, { verify_jwt?: boolean }>;
  };
  const mounted = new Map<string, Mounted>();
  for (const slug of functionSlugs()) {
    const { app } = await import(`${repoRoot}/functions/${slug}/app.ts`);
    mounted.set(slug, {
      slug,
      verifyJwt: toml.functions?.[slug]?.verify_jwt ?? true,
      fetch: app.fetch,
    });
  }
  const jwksBody = JSON.stringify(options.jwks ?? { keys: [] });

  async function fetch(req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> {
    const requestId = crypto.randomUUID();
    try {
      return await route(req, info, requestId);
    } catch (err) {
      // The gateway's own refusals (401, 404, 405) are problem+json like the functions' are.
      return problem(req, toProblem(err), requestId);
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
      await verifyJwtOnce(token);
    }
    url.pathname = `/${fn.slug}${match![2] ?? ""}`;
    const headers = new Headers(req.headers);
    // The client's address as each trusted proxy passes it on, so every `CLIENT_IP_HEADER`
    // reads the socket's peer: `cf-connecting-ip` replaced (Cloudflare, hosted Supabase),
    // `x-real-ip` replaced (nginx), and the peer appended to `x-forwarded-for` after whatever
    // the client sent there (Kong). shared/client_ip.ts reads the configured one.
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
function problem(req: Request, problem: ProblemError, requestId: string): Response {
  const headers = new Headers({
    "content-type": "application/problem+json",
    "x-request-id": requestId,
    ...problem.options.headers,
  });
  const origin = req.headers.get("origin");
  if (config.corsOrigins === "*") headers.set("access-control-allow-origin", "*");
  else if (origin && config.corsOrigins.includes(origin)) {
    headers.set("access-control-allow-origin", origin);
    headers.set("vary", "origin");
  }
  headers.set("access-control-expose-headers", "x-request-id");
  const body = req.method === "HEAD" ? null : JSON.stringify(problemBody(problem, requestId));
  return new Response(body, { status: problem.status, headers });
}
