/**
 * The local stand-in for `supabase functions serve`: mounts every `functions/<slug>/app.ts`
 * under `/functions/v1/<slug>`, applies `verify_jwt` from `supabase/config.toml` (401 before
 * the function runs, like the platform), and serves the JWKS like Supabase Auth.
 * Functions must be imported after the environment is set: their config is parsed at load.
 *
 * @module
 */
import { parse } from "smol-toml";
import { bearerToken, verifyJwt } from "../shared/auth.ts";
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
    const url = new URL(req.url);
    if (url.pathname === "/auth/v1/.well-known/jwks.json") {
      return new Response(jwksBody, { headers: { "content-type": "application/json" } });
    }
    const match = url.pathname.match(/^\/functions\/v1\/([^/]+)(\/.*)?$/);
    const fn = match ? mounted.get(match[1]) : undefined;
    if (!fn) return json(404, { code: 404, message: "Requested function was not found" });
    if (fn.verifyJwt && req.method !== "OPTIONS") {
      const token = bearerToken(req);
      if (!token) return json(401, { code: 401, message: "Missing authorization header" });
      try {
        await verifyJwt(token);
      } catch {
        return json(401, { code: 401, message: "Invalid JWT" });
      }
    }
    url.pathname = `/${fn.slug}${match![2] ?? ""}`;
    const headers = new Headers(req.headers);
    if (info && "hostname" in info.remoteAddr) {
      headers.set("x-forwarded-for", info.remoteAddr.hostname);
    }
    return await fn.fetch(
      new Request(url, { method: req.method, headers, body: req.body, signal: req.signal }),
    );
  }
  return { fetch, slugs: [...mounted.keys()] };
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", "x-request-id": crypto.randomUUID() },
  });
}
