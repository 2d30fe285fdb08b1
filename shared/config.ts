/**
 * The environment, parsed with zod where it is used: {@link loadConfig} reads what every
 * function shares (database, Redis, auth, HTTP limits, OpenAI), and each function reads its
 * own settings with {@link section} (e.g. `functions/feed/config.ts`). A bad or missing value
 * fails at boot with a message naming the variable, not at the first request. Nothing here
 * reads the process environment: `functions/<slug>/index.ts` passes `Deno.env.toObject()`,
 * tests pass their own.
 *
 * @module
 */
import { z } from "zod";

/** An environment: variable name → value. */
export type Env = Record<string, string | undefined>;

/** A positive integer variable with a default. */
export const int = (fallback: number) => z.coerce.number().int().positive().default(fallback);
/** A boolean variable (`true`/`false`/`1`/`0`) with a default. */
export const flag = (fallback: boolean) =>
  z.enum(["true", "false", "1", "0"]).default(fallback ? "true" : "false").transform((v) =>
    v === "true" || v === "1"
  );

/**
 * Parses the variables `shape` names out of `env`. Throws an Error whose message names every
 * bad variable (`invalid environment:\n  NAME: reason`).
 */
export function section<S extends z.ZodRawShape>(
  env: Env,
  shape: S,
): z.infer<z.ZodObject<S>> {
  const result = z.object(shape).safeParse(env);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `  ${i.path.join(".")}: ${i.message}`);
    throw new Error(`invalid environment:\n${lines.join("\n")}`);
  }
  return result.data;
}
const jwks = z.string().transform((text, ctx) => {
  try {
    const parsed = JSON.parse(text);
    if (Array.isArray(parsed?.keys)) return parsed as { keys: Record<string, unknown>[] };
  } catch {
    // reported below
  }
  ctx.addIssue({ code: "custom", message: 'must be a JSON Web Key Set: {"keys": [...]}' });
  return z.NEVER;
});

const coreEnv = {
  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/ }).optional(),
  SUPABASE_DB_URL: z.url({ protocol: /^postgres(ql)?$/ }).optional(),
  DB_POOL_MAX: int(4),
  DB_STATEMENT_TIMEOUT_MS: int(5000),
  /** Pool connections searches may hold at once (default: a quarter of the pool, at least 1). */
  DB_SEARCH_SLOTS: z.coerce.number().int().positive().optional(),
  SEARCH_STATEMENT_TIMEOUT_MS: int(300),
  SEARCH_CONCURRENCY_PER_USER: int(2),
  UPSTASH_REDIS_REST_URL: z.url().optional(),
  UPSTASH_REDIS_REST_TOKEN: z.string().min(1).optional(),
  REDIS_PREFIX: z.string().default("rockout:"),
  REDIS_TIMEOUT_MS: int(1000),
  SUPABASE_URL: z.url().optional(),
  SUPABASE_JWKS: jwks.optional(),
  SUPABASE_JWKS_URL: z.url().optional(),
  /** Legacy HS256 shared secret; only for projects that have not moved to signing keys. */
  JWT_SECRET: z.string().min(32).optional(),
  SUPABASE_SECRET_KEYS: z.string().optional(),
  /** `{"default": "sb_publishable_…"}`: a signed-out client's key, which means "anonymous". */
  SUPABASE_PUBLISHABLE_KEYS: z.string().optional(),
  /** The legacy anon JWT (same meaning as a publishable key). */
  SUPABASE_ANON_KEY: z.string().min(1).optional(),
  CORS_ORIGINS: z.string().default("*"),
  MAX_BODY_BYTES: int(1024 * 1024),
  REQUEST_BUDGET_MS: int(10_000),
  MAX_IN_FLIGHT: int(512),
  MIN_IN_FLIGHT: int(32),
  ADMISSION_TARGET_MS: int(100),
  USER_MAX_IN_FLIGHT: int(16),
  ANON_IP_MAX_IN_FLIGHT: int(32),
  /** The header the deployment's trusted proxy writes the client's address into. */
  CLIENT_IP_HEADER: z.enum(["cf-connecting-ip", "x-forwarded-for", "x-real-ip"]).default(
    "cf-connecting-ip",
  ),
  BODY_READ_TIMEOUT_MS: int(3000),
  BODY_IDLE_TIMEOUT_MS: int(2500),
  BODY_MIN_BYTES_PER_S: int(64 * 1024),
  BODY_BUFFER_MAX_BYTES: int(64 * 1024 * 1024),
  ANON_READ_RATE_LIMIT_PER_MIN: int(120),
  RATE_LIMIT_DECISION_MS: int(50),
  CACHE_DISABLED: flag(false),
  OPENAI_API_KEY: z.string().min(1).optional(),
  OPENAI_BASE_URL: z.url().optional(),
  OPENAI_SMALL_MODEL: z.string().default("gpt-4o-mini"),
  OPENAI_LARGE_MODEL: z.string().default("gpt-4o"),
  OPENAI_TRANSCRIBE_MODEL: z.string().default("gpt-4o-mini-transcribe"),
  APP_VERSION: z.string().default("0.1.0"),
  LOG_REQUESTS: flag(true),
};

/** What every function shares (each function's own settings: {@link section}). */
export type Config = ReturnType<typeof loadConfig>;

/** Parses the shared settings of `env`. Throws an Error naming every bad variable. */
export function loadConfig(env: Env) {
  const e = section(env, coreEnv);
  const databaseUrl = e.DATABASE_URL ?? e.SUPABASE_DB_URL;
  if (!databaseUrl) {
    throw new Error("invalid environment:\n  DATABASE_URL: required (or SUPABASE_DB_URL)");
  }
  if (!!e.UPSTASH_REDIS_REST_URL !== !!e.UPSTASH_REDIS_REST_TOKEN) {
    throw new Error(
      "invalid environment:\n  UPSTASH_REDIS_REST_TOKEN: UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN go together",
    );
  }
  const jwksUrl = e.SUPABASE_JWKS_URL ??
    (e.SUPABASE_URL ? new URL("/auth/v1/.well-known/jwks.json", e.SUPABASE_URL).href : undefined);
  const auth = {
    jwks: e.SUPABASE_JWKS ?? null,
    jwksUrl: jwksUrl ?? null,
    jwtSecret: e.JWT_SECRET ?? null,
  };
  const authConfigured = !!(e.SUPABASE_JWKS || jwksUrl || e.JWT_SECRET);
  return {
    databaseUrl,
    dbPoolMax: e.DB_POOL_MAX,
    dbStatementTimeoutMs: e.DB_STATEMENT_TIMEOUT_MS,
    /** Never the whole pool: other work keeps at least one connection. */
    dbSearchSlots: Math.max(
      1,
      Math.min(e.DB_SEARCH_SLOTS ?? Math.floor(e.DB_POOL_MAX / 4), e.DB_POOL_MAX - 1),
    ),
    search: {
      /** `statement_timeout` of one search (profiles, recall catalog). */
      statementTimeoutMs: e.SEARCH_STATEMENT_TIMEOUT_MS,
      /** Searches in flight per user (every isolate, and each isolate on its own). */
      concurrencyPerUser: e.SEARCH_CONCURRENCY_PER_USER,
    },
    redis: e.UPSTASH_REDIS_REST_URL
      ? { url: e.UPSTASH_REDIS_REST_URL, token: e.UPSTASH_REDIS_REST_TOKEN! }
      : null,
    redisPrefix: e.REDIS_PREFIX,
    redisTimeoutMs: e.REDIS_TIMEOUT_MS,
    /**
     * Token verification keys, checked on first read: only processes that verify tokens
     * (every function, on its first token) need them, not `npm run worker`.
     */
    get auth(): typeof auth {
      if (!authConfigured) {
        throw new Error(
          "invalid environment:\n  SUPABASE_JWKS: required to verify access tokens (or SUPABASE_JWKS_URL, SUPABASE_URL, JWT_SECRET)",
        );
      }
      return auth;
    },
    secretKeys: parseKeySet(e.SUPABASE_SECRET_KEYS),
    /** Project keys a signed-out client sends as its bearer: anonymous, not a user. */
    publishableKeys: parseKeySet(
      e.SUPABASE_PUBLISHABLE_KEYS,
      "SUPABASE_PUBLISHABLE_KEYS",
      "sb_publishable_…",
    ),
    anonKey: e.SUPABASE_ANON_KEY ?? null,
    /** Where `clientIp` reads the client's address (shared/http/client_ip.ts). */
    clientIpHeader: e.CLIENT_IP_HEADER,
    corsOrigins: e.CORS_ORIGINS === "*" ? "*" : e.CORS_ORIGINS.split(",").map((o) => o.trim()),
    maxBodyBytes: e.MAX_BODY_BYTES,
    requestBudgetMs: e.REQUEST_BUDGET_MS,
    admission: {
      /** Ceiling and floor of the adaptive concurrency limit per isolate. */
      maxInFlight: e.MAX_IN_FLIGHT,
      minInFlight: Math.min(e.MIN_IN_FLIGHT, e.MAX_IN_FLIGHT),
      /** Window p90 latency (ms) above which the limit shrinks. */
      targetMs: e.ADMISSION_TARGET_MS,
      /** In-flight requests per signed-in user, and per client IP for anonymous callers. */
      perUser: e.USER_MAX_IN_FLIGHT,
      perAnonIp: e.ANON_IP_MAX_IN_FLIGHT,
    },
    body: {
      /** A body must start within this and keep coming at `minBytesPerS` (else 408). */
      timeoutMs: e.BODY_READ_TIMEOUT_MS,
      /** No byte for this long is a stall (408), whatever the grace left. */
      idleMs: e.BODY_IDLE_TIMEOUT_MS,
      minBytesPerS: e.BODY_MIN_BYTES_PER_S,
      /** Bytes of request bodies this isolate buffers at once (past it: 503 before reading). */
      bufferMaxBytes: e.BODY_BUFFER_MAX_BYTES,
    },
    limits: {
      /** Anonymous reads (openapi.json, /health) per client IP. */
      anonReadPerMin: e.ANON_READ_RATE_LIMIT_PER_MIN,
      /** How long a limit waits for Redis before its fail-open/closed rule decides. */
      decisionMs: e.RATE_LIMIT_DECISION_MS,
    },
    cacheDisabled: e.CACHE_DISABLED,
    openai: e.OPENAI_API_KEY
      ? {
        apiKey: e.OPENAI_API_KEY,
        baseUrl: e.OPENAI_BASE_URL ?? null,
        smallModel: e.OPENAI_SMALL_MODEL,
        largeModel: e.OPENAI_LARGE_MODEL,
        transcribeModel: e.OPENAI_TRANSCRIBE_MODEL,
      }
      : null,
    version: e.APP_VERSION,
    logRequests: e.LOG_REQUESTS,
  };
}

/** `SUPABASE_SECRET_KEYS` is a JSON object of name → `sb_secret_…` key. */
function parseKeySet(
  text: string | undefined,
  name = "SUPABASE_SECRET_KEYS",
  example = "sb_secret_…",
): Map<string, string> {
  if (!text) return new Map();
  try {
    return new Map(Object.entries(JSON.parse(text) as Record<string, string>));
  } catch {
    throw new Error(
      `invalid environment:\n  ${name}: must be a JSON object {"default": "${example}"}`,
    );
  }
}
