/**
 * In-process access-token verification.
 *
 * Written on jose rather than `@supabase/server`'s adapter because we need three things it
 * doesn't give: the verified key set kept per isolate (the adapter re-imports an inline
 * JWKS on every request), tokens signed with the legacy HS256 project secret (the adapter
 * rejects them), and no per-request supabase-js clients (we query Postgres directly).
 * Tokens are accepted exactly when Supabase Auth would have issued them: ES256/RS256 from
 * the project's JWKS (inline `SUPABASE_JWKS` or fetched from `SUPABASE_JWKS_URL`), or HS256
 * with `JWT_SECRET`; every token must carry `exp` and `role`, a user token also `aud:
 * authenticated` and `sub` a user id. The project's own keys (publishable, legacy anon JWT)
 * mean "anonymous".
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
  type JWTVerifyGetKey,
} from "jose";
import type { Config } from "../config.ts";
import { ProblemError } from "../http/problem.ts";

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

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function unauthorized(detail: string): ProblemError {
  return new ProblemError(401, "unauthorized", detail, {
    headers: { "www-authenticate": `Bearer error="invalid_token"` },
  });
}

/** Claims every token must carry: one without `exp` would be valid forever. */
const requiredClaims = ["exp", "role"];

/** How many verified tokens the isolate's cache keeps. */
const maxVerified = 10_000;

function projectKeyRefused(): ProblemError {
  return unauthorized(
    "this route needs a signed-in user's access token; the project's API key names no user",
  );
}

/** The user of a verified token that is not the anon key, or a 401 naming the bad claim. */
function toUser(payload: JWTPayload): AuthUser {
  if (payload.sub === undefined) throw unauthorized("the access token has no sub claim");
  if (typeof payload.sub !== "string" || !uuidPattern.test(payload.sub)) {
    throw unauthorized("the access token names no user");
  }
  if (payload.aud === undefined) throw unauthorized("the access token has no aud claim");
  const audiences = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
  if (!audiences.includes("authenticated")) {
    throw unauthorized("the access token's aud claim is not valid");
  }
  if (payload.role !== "authenticated") throw unauthorized("the access token is not a user token");
  return {
    // Canonical (lowercase) like every id from a request, so string comparisons and cache
    // keys agree with ids from paths and bodies.
    id: payload.sub.toLowerCase(),
    role: payload.role,
    email: typeof payload.email === "string" ? payload.email : null,
    claims: payload as AuthUser["claims"],
  };
}

/** RFC 6750 `Bearer <b64token>`, nothing before or after. */
const bearerPattern = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/i;

/**
 * The bearer token of a request, or null when there is no `Authorization` header. A header
 * that is present but not exactly `Bearer <token>` is a 401: read as "no token", a typo or a
 * proxy's mangling would silently make a signed-in caller anonymous.
 */
export function bearerToken(req: Request): string | null {
  const value = req.headers.get("authorization");
  if (value === null) return null;
  const match = value.match(bearerPattern);
  if (!match) {
    throw unauthorized("the Authorization header is malformed: send `Bearer <access token>`");
  }
  return match[1];
}

/** SHA-256 of a string: equal-length digests, so comparing them leaks no length. */
async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/** A token whose signature and claims were checked, kept until its `exp`. */
interface Verified {
  payload: JWTPayload;
  /** `exp`, in ms. */
  expiresAt: number;
  /** Who it names, once {@link Auth.identify} has asked (null: anonymous, an `anon` token). */
  user?: AuthUser | null;
}

/** Options of an {@link Auth}. */
export interface AuthOptions {
  /** The clock that `exp` is checked against, cached or not (ms since the epoch). */
  now?: () => number;
}

/**
 * Token verification of one isolate: its keys (made on first use, so a process that verifies
 * no token needs none) and its one cache of verified tokens.
 */
export class Auth {
  readonly #config: Pick<Config, "auth" | "publishableKeys" | "anonKey" | "secretKeys">;
  readonly #now: () => number;
  #keySet:
    | { set: JWTVerifyGetKey | null; secret: Uint8Array | null }
    | undefined;
  #digests: Promise<Uint8Array[]> | undefined;
  /**
   * Tokens verified recently in this isolate, by the gateway's `verify_jwt`
   * ({@link verifyJwtOnce}) and by the function ({@link identify}) alike: a client sends the
   * same access token for up to an hour, and an ES256 signature check costs ~0.4 ms of CPU,
   * the largest single cost of a cached read, so a token is checked once per isolate, not
   * once per layer. A hit is still checked against `exp`; at most {@link maxVerified}
   * entries, the oldest dropped first.
   */
  readonly #verified = new Map<string, Verified>();
  /** Verifications under way, so concurrent first requests with one token check it once. */
  readonly #pending = new Map<string, Promise<Verified>>();
  #signatureChecks = 0;

  constructor(
    config: Pick<Config, "auth" | "publishableKeys" | "anonKey" | "secretKeys">,
    options: AuthOptions = {},
  ) {
    this.#config = config;
    this.#now = options.now ?? Date.now;
  }

  /** How many tokens this isolate has verified with its keys (cache misses): for tests. */
  get signatureChecks(): number {
    return this.#signatureChecks;
  }

  /**
   * Checks that verification keys are configured (throws naming `SUPABASE_JWKS` if not): a
   * function calls it at boot, so a missing key fails there, not at the first request.
   */
  requireKeys(): void {
    this.#keys();
  }

  /** The verification keys, from the config on first use (which throws when none are set). */
  #keys() {
    if (this.#keySet) return this.#keySet;
    const auth = this.#config.auth;
    return this.#keySet = {
      set: auth.jwks
        ? createLocalJWKSet(auth.jwks as Parameters<typeof createLocalJWKSet>[0])
        : auth.jwksUrl
        ? createRemoteJWKSet(new URL(auth.jwksUrl))
        : null,
      secret: auth.jwtSecret ? new TextEncoder().encode(auth.jwtSecret) : null,
    };
  }

  /** Digests of the configured secret keys, computed once. */
  get #secretKeyDigests(): Promise<Uint8Array[]> {
    return this.#digests ??= Promise.all([...this.#config.secretKeys.values()].map(sha256));
  }

  /**
   * Verifies a JWT's signature and expiry against the project's keys, as the platform's
   * `verify_jwt` does (any role; `exp` and `role` required). Throws a 401 ProblemError saying
   * what is wrong.
   */
  async verifyJwt(token: string, audience?: string): Promise<JWTPayload> {
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw unauthorized("the access token is malformed");
    }
    const useSecret = header.alg === "HS256" && this.#keys().secret !== null;
    if (!useSecret && !this.#keys().set) {
      throw unauthorized(`tokens signed with ${header.alg} are not accepted`);
    }
    this.#signatureChecks++;
    try {
      const options = {
        audience,
        requiredClaims,
        currentDate: new Date(this.#now()),
        algorithms: useSecret ? ["HS256"] : ["ES256", "RS256"],
      };
      return useSecret
        ? (await jwtVerify(token, this.#keys().secret!, options)).payload
        : (await jwtVerify(token, this.#keys().set!, options)).payload;
    } catch (err) {
      if (err instanceof errors.JWTExpired) throw unauthorized("the access token has expired");
      if (err instanceof errors.JWTClaimValidationFailed) {
        throw unauthorized(
          err.reason === "missing"
            ? `the access token has no ${err.claim} claim`
            : `the access token's ${err.claim} claim is not valid`,
        );
      }
      throw unauthorized("the access token's signature is not valid");
    }
  }

  /**
   * The payload of a token verified by {@link verifyJwt}, from the isolate's cache while the
   * token's `exp` is ahead, else verified (once, however many callers wait on it) and cached.
   */
  async #verifiedOnce(token: string): Promise<Verified> {
    const known = this.#verified.get(token);
    if (known) {
      if (known.expiresAt > this.#now()) return known;
      this.#verified.delete(token);
    }
    const pending = this.#pending.get(token);
    if (pending) return await pending;
    const check = this.verifyJwt(token).then((payload) => {
      const entry: Verified = { payload, expiresAt: payload.exp! * 1000 };
      if (this.#verified.size >= maxVerified) {
        this.#verified.delete(this.#verified.keys().next().value!);
      }
      this.#verified.set(token, entry);
      return entry;
    }).finally(() => this.#pending.delete(token));
    this.#pending.set(token, check);
    return await check;
  }

  /**
   * {@link verifyJwt} at most once per token per isolate (until its `exp`): what the local
   * gateway's `verify_jwt` runs on every request. On Supabase that check happens in the
   * platform's gateway, outside our CPU; here it shares {@link identify}'s cache, so the
   * gateway and the function behind it check a token's signature once between them.
   */
  async verifyJwtOnce(token: string): Promise<void> {
    await this.#verifiedOnce(token);
  }

  /**
   * Who a bearer token names: a user (a user access token), or null, anonymous, for one of the
   * project's own keys, which a signed-out supabase-js client sends as its bearer: an
   * `sb_publishable_…` key (supabase-js 2.119 sends it to functions only as `apikey`; older
   * versions and `supabase.fetch` as the bearer) or the legacy anon JWT (`role: anon`).
   * Anything else is a 401 saying what is wrong.
   */
  async identify(token: string): Promise<AuthUser | null> {
    const known = this.#verified.get(token);
    if (known?.user !== undefined && known.expiresAt > this.#now()) return known.user;
    if (this.#isProjectKey(token)) return null;
    const entry = await this.#verifiedOnce(token);
    if (entry.user !== undefined) return entry.user;
    // A verified token that names no user (a service_role token, say) stays cached as
    // verified for verify_jwt, and is refused here each time (no signature check).
    return entry.user = entry.payload.role === "anon" ? null : toUser(entry.payload);
  }

  /** Verifies a user access token (`aud: authenticated`, `sub` a user id, `role`, `exp`). */
  async verifyAccessToken(token: string): Promise<AuthUser> {
    const user = await this.identify(token);
    if (!user) throw projectKeyRefused();
    return user;
  }

  /** A publishable key or the legacy anon key of this project; 401 for other API keys. */
  #isProjectKey(token: string): boolean {
    if (token.startsWith("sb_publishable_")) {
      // Unconfigured (local development): any publishable key means anonymous, which grants
      // exactly what sending no token does.
      if (this.#config.publishableKeys.size === 0 && /^sb_publishable_[\w-]+$/.test(token)) {
        return true;
      }
      for (const key of this.#config.publishableKeys.values()) if (key === token) return true;
      throw unauthorized("the API key is not a publishable key of this project");
    }
    if (token.startsWith("sb_")) {
      throw unauthorized("API keys go in the apikey header; the bearer must be an access token");
    }
    return this.#config.anonKey !== null && token === this.#config.anonKey;
  }

  /** Requires a valid user token; sets `c.var.user`. */
  requireUser(): MiddlewareHandler<{ Variables: AuthVariables }> {
    return async (c, next) => {
      const token = bearerToken(c.req.raw);
      if (!token) throw unauthorized("a bearer access token is required");
      c.set("user", await this.verifyAccessToken(token));
      await next();
    };
  }

  /**
   * Verifies a token when one is sent (a bad one is still a 401); anonymous without one or with
   * one of the project's keys (a signed-out supabase-js client).
   */
  optionalUser(): MiddlewareHandler<{ Variables: AuthVariables }> {
    return async (c, next) => {
      const token = bearerToken(c.req.raw);
      c.set("user", token ? await this.identify(token) : null);
      await next();
    };
  }

  /**
   * Requires one of the project's secret API keys (`SUPABASE_SECRET_KEYS`), sent as
   * `apikey: sb_secret_…` or `Authorization: Bearer sb_secret_…`: for machine callers such
   * as the cron trigger of `jobs-worker`. Compared in constant time against every key.
   */
  requireSecretKey(): MiddlewareHandler<{ Variables: AuthVariables }> {
    return async (c, next) => {
      const presented = c.req.header("apikey") ?? bearerToken(c.req.raw);
      if (!presented) throw unauthorized("a secret API key is required (apikey header)");
      const digest = await sha256(presented);
      let match = 0;
      for (const expected of await this.#secretKeyDigests) {
        let diff = 0;
        for (let i = 0; i < expected.length; i++) diff |= expected[i] ^ digest[i];
        match |= diff === 0 ? 1 : 0;
      }
      if (!match) throw unauthorized("the API key is not a secret key of this project");
      c.set("user", null);
      await next();
    };
  }
}
