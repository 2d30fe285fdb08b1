/**
 * Local stand-in for Supabase Auth's signing keys: one ES256 key pair, generated once under
 * `.local/`, whose public half functions receive as `SUPABASE_JWKS` and the gateway serves
 * at `/auth/v1/.well-known/jwks.json`; and access tokens shaped like Supabase Auth's.
 *
 * @module
 */
import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";

/** A signing key and its public JWKS. */
export interface DevKeys {
  jwks: { keys: JWK[] };
  /** Mints a Supabase-shaped access token for `userId`. */
  mint(userId: string, options?: MintOptions): Promise<string>;
  /**
   * The project's legacy anon key, as a signed-out supabase-js client sends it: `role: anon`,
   * no `sub`, no `aud`, signed by the project's key.
   */
  mintAnon(options?: { ttlS?: number }): Promise<string>;
}

/** How to shape a minted token (tests also mint broken ones). */
export interface MintOptions {
  email?: string;
  ttlS?: number;
  issuer?: string;
  /** Registered or custom claims to leave out (`exp`, `sub`, `aud`, `role`…). */
  omit?: string[];
  /** Claims to set or override. */
  claims?: Record<string, unknown>;
}

/** A fresh in-memory key pair (tests). */
export async function createDevKeys(): Promise<DevKeys> {
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  const privateJwk = { ...(await exportJWK(privateKey)), kid: crypto.randomUUID(), alg: "ES256" };
  return fromPrivateJwk(privateJwk);
}

/** The key pair stored at `path`, created on first use (`npm start`, `npm run token`). */
export async function loadOrCreateDevKeys(path: string): Promise<DevKeys> {
  try {
    return await fromPrivateJwk(JSON.parse(await Deno.readTextFile(path)));
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  const privateJwk = { ...(await exportJWK(privateKey)), kid: crypto.randomUUID(), alg: "ES256" };
  await Deno.mkdir(path.replace(/\/[^/]+$/, ""), { recursive: true });
  await Deno.writeTextFile(path, JSON.stringify(privateJwk), { mode: 0o600 });
  return fromPrivateJwk(privateJwk);
}

async function fromPrivateJwk(privateJwk: JWK): Promise<DevKeys> {
  const key = await importJWK(privateJwk, "ES256");
  const { d: _secret, ...publicJwk } = privateJwk;
  return {
    jwks: { keys: [{ ...publicJwk, use: "sig", key_ops: ["verify"] }] },
    mint(userId, options = {}) {
      const now = Math.floor(Date.now() / 1000);
      const payload: Record<string, unknown> = {
        email: options.email ?? `${userId.slice(0, 8)}@rockout.local`,
        phone: "",
        app_metadata: { provider: "email", providers: ["email"] },
        user_metadata: {},
        role: "authenticated",
        aal: "aal1",
        amr: [{ method: "password", timestamp: now }],
        session_id: crypto.randomUUID(),
        is_anonymous: false,
        sub: userId,
        aud: "authenticated",
        iss: options.issuer ?? "http://127.0.0.1:54321/auth/v1",
        iat: now,
        exp: now + (options.ttlS ?? 3600),
        ...options.claims,
      };
      for (const claim of options.omit ?? []) delete payload[claim];
      return new SignJWT(payload)
        .setProtectedHeader({ alg: "ES256", kid: privateJwk.kid, typ: "JWT" })
        .sign(key);
    },
    mintAnon(options = {}) {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ iss: "supabase", ref: "local", role: "anon" })
        .setProtectedHeader({ alg: "ES256", kid: privateJwk.kid, typ: "JWT" })
        .setIssuedAt(now)
        .setExpirationTime(now + (options.ttlS ?? 10 * 365 * 24 * 3600))
        .sign(key);
    },
  };
}
