/**
 * In-process access-token verification.
 *
 * Written on jose rather than `@supabase/server`'s adapter because we need three things it
 * doesn't give: the verified key set kept at module scope (the adapter re-imports an inline
 * JWKS on every request), tokens signed with the legacy HS256 project secret (the adapter
 * rejects them), and no per-request supabase-js clients (we query Postgres directly).
 * Tokens are accepted exactly when Supabase Auth would have issued them: ES256/RS256 from
 * the project's JWKS (inline `SUPABASE_JWKS` or fetched from `SUPABASE_JWKS_URL`), or HS256
 * with `JWT_SECRET`; `aud` must be `authenticated` and `sub` a user id.
 *
 * @module
 */
import type { MiddlewareHandler } from "hono";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  type JWTPayload,
  jwtVerify,
} from "jose";
import { config } from "./config.ts";
import { ProblemError } from "./problem.ts";

/** The caller, as the verified token says. */
export interface AuthUser {
  id: string;
  role: string;
  email: string | null;
  /** All claims, passed to Postgres as `request.jwt.claims` so RLS sees what PostgREST would. */
  claims: JWTPayload & { sub: string; role: string };
}

/** Hono variables set by the auth middleware. */
export type AuthVariables = { user: AuthUser | null };

const keySet = config.auth.jwks
  ? createLocalJWKSet(config.auth.jwks as Parameters<typeof createLocalJWKSet>[0])
  : config.auth.jwksUrl
  ? createRemoteJWKSet(new URL(config.auth.jwksUrl))
  : null;
const sharedSecret = config.auth.jwtSecret ? new TextEncoder().encode(config.auth.jwtSecret) : null;
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function unauthorized(detail: string): ProblemError {
  return new ProblemError(401, "unauthorized", detail, {
    headers: { "www-authenticate": `Bearer error="invalid_token"` },
  });
}

/**
 * Verifies a JWT's signature and expiry against the project's keys, as the platform's
 * `verify_jwt` does (any role). Throws a 401 ProblemError saying what is wrong.
 */
export async function verifyJwt(token: string, audience?: string): Promise<JWTPayload> {
  let header;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    throw unauthorized("the access token is malformed");
  }
  const useSecret = header.alg === "HS256" && sharedSecret !== null;
  if (!useSecret && !keySet) {
    throw unauthorized(`tokens signed with ${header.alg} are not accepted`);
  }
  try {
    const options = { audience, algorithms: useSecret ? ["HS256"] : ["ES256", "RS256"] };
    return useSecret
      ? (await jwtVerify(token, sharedSecret!, options)).payload
      : (await jwtVerify(token, keySet!, options)).payload;
  } catch (err) {
    if (err instanceof errors.JWTExpired) throw unauthorized("the access token has expired");
    if (err instanceof errors.JWTClaimValidationFailed) {
      throw unauthorized(`the access token's ${err.claim} claim is not valid`);
    }
    throw unauthorized("the access token's signature is not valid");
  }
}

/**
 * Tokens verified recently in this isolate. A client sends the same access token for up to an
 * hour, and an ES256 signature check costs ~0.4 ms of CPU, the largest single cost of a
 * cached read; a hit is still checked against `exp`.
 */
const verified = new Map<string, AuthUser>();
const maxVerified = 10_000;

/** Verifies a user access token (`aud: authenticated`, `sub` a user id). */
export async function verifyAccessToken(token: string): Promise<AuthUser> {
  const known = verified.get(token);
  if (known && (known.claims.exp ?? 0) * 1000 > Date.now()) return known;
  const user = await verifyUserToken(token);
  if (verified.size >= maxVerified) verified.delete(verified.keys().next().value!);
  verified.set(token, user);
  return user;
}

async function verifyUserToken(token: string): Promise<AuthUser> {
  const payload = await verifyJwt(token, "authenticated");
  if (typeof payload.sub !== "string" || !uuidPattern.test(payload.sub)) {
    throw unauthorized("the access token names no user");
  }
  if (payload.role !== "authenticated") throw unauthorized("the access token is not a user token");
  return {
    id: payload.sub,
    role: payload.role,
    email: typeof payload.email === "string" ? payload.email : null,
    claims: payload as AuthUser["claims"],
  };
}

/** The bearer token of a request, or null. */
export function bearerToken(req: Request): string | null {
  const value = req.headers.get("authorization");
  const match = value?.match(/^Bearer\s+(\S+)$/i);
  return match ? match[1] : null;
}

/** Requires a valid user token; sets `c.var.user`. */
export function requireUser(): MiddlewareHandler<{ Variables: AuthVariables }> {
  return async (c, next) => {
    const token = bearerToken(c.req.raw);
    if (!token) throw unauthorized("a bearer access token is required");
    c.set("user", await verifyAccessToken(token));
    await next();
  };
}

/** Verifies a token when one is sent (a bad one is still a 401); anonymous otherwise. */
export function optionalUser(): MiddlewareHandler<{ Variables: AuthVariables }> {
  return async (c, next) => {
    const token = bearerToken(c.req.raw);
    c.set("user", token ? await verifyAccessToken(token) : null);
    await next();
  };
}

/** SHA-256 of a string: equal-length digests, so comparing them leaks no length. */
async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/** Digests of the configured secret keys, computed once per isolate. */
const secretKeyDigests = Promise.all([...config.secretKeys.values()].map(sha256));

/**
 * Requires one of the project's secret API keys (`SUPABASE_SECRET_KEYS`), sent as
 * `apikey: sb_secret_…` or `Authorization: Bearer sb_secret_…`: for machine callers such
 * as the cron trigger of `jobs-worker`. Compared in constant time against every key.
 */
export function requireSecretKey(): MiddlewareHandler<{ Variables: AuthVariables }> {
  return async (c, next) => {
    const presented = c.req.header("apikey") ?? bearerToken(c.req.raw);
    if (!presented) throw unauthorized("a secret API key is required (apikey header)");
    const digest = await sha256(presented);
    let match = 0;
    for (const expected of await secretKeyDigests) {
      let diff = 0;
      for (let i = 0; i < expected.length; i++) diff |= expected[i] ^ digest[i];
      match |= diff === 0 ? 1 : 0;
    }
    if (!match) throw unauthorized("the API key is not a secret key of this project");
    c.set("user", null);
    await next();
  };
}
