/**
 * Environment, parsed once with zod at module scope. A bad or missing value fails at boot
 * with a message naming the variable, instead of a confusing error on the first request.
 *
 * @module
 */
import { z } from "zod";

const int = (fallback: number) => z.coerce.number().int().positive().default(fallback);
const flag = (fallback: boolean) =>
  z.enum(["true", "false", "1", "0"]).default(fallback ? "true" : "false").transform((v) =>
    v === "true" || v === "1"
  );
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

const envSchema = z.object({
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
  FEED_RATE_LIMIT_PER_MIN: int(120),
  ANON_READ_RATE_LIMIT_PER_MIN: int(120),
  ANON_WRITE_RATE_LIMIT_PER_MIN: int(30),
  POST_RATE_LIMIT_PER_MIN: int(20),
  REPLY_RATE_LIMIT_PER_MIN: int(30),
  LIKES_RATE_LIMIT_PER_MIN: int(120),
  PROFILE_SEARCH_RATE_LIMIT_PER_MIN: int(60),
  PROFILE_CACHE_TTL_S: int(300),
  SUMMARY_MAX_REPLIES: int(50),
  SUMMARY_MAX_INPUT_CHARS: int(12_000),
  SUMMARY_LLM_TIMEOUT_MS: int(20_000),
  SUMMARY_RETRY_AFTER_S: int(60),
  RECALL_RATE_LIMIT_PER_MIN: int(10),
  RECALL_RATE_LIMIT_PER_HOUR: int(100),
  RECALL_CONCURRENCY: int(5),
  RECALL_READ_RATE_LIMIT_PER_MIN: int(120),
  RECALL_TRANSCRIBE_TIMEOUT_MS: int(10_000),
  RECALL_INTENT_TIMEOUT_MS: int(10_000),
  RECALL_CANDIDATES_TIMEOUT_MS: int(30_000),
  RECALL_RECOGNITION_TIMEOUT_MS: int(10_000),
  RECALL_ANSWER_TTL_S: int(300),
  RATE_LIMIT_DECISION_MS: int(50),
  EVENTS_RATE_LIMIT_PER_MIN: int(60),
  NOTIFICATIONS_RATE_LIMIT_PER_MIN: int(120),
  PROFILE_EDIT_RATE_LIMIT_PER_MIN: int(30),
  JOBS_RUN_RATE_LIMIT_PER_MIN: int(60),
  JOBS_CONCURRENCY: int(4),
  JOBS_TASK_TIMEOUT_MS: int(15_000),
  JOBS_RUN_BUDGET_MS: int(60_000),
  FEED_FOR_YOU_TTL_S: int(30),
  FEED_FOLLOWING_TTL_S: int(15),
  CACHE_DISABLED: flag(false),
  OPENAI_API_KEY: z.string().min(1).optional(),
  OPENAI_BASE_URL: z.url().optional(),
  OPENAI_SMALL_MODEL: z.string().default("gpt-4o-mini"),
  OPENAI_LARGE_MODEL: z.string().default("gpt-4o"),
  OPENAI_TRANSCRIBE_MODEL: z.string().default("gpt-4o-mini-transcribe"),
  ACRCLOUD_HOST: z.string().min(1).optional(),
  ACRCLOUD_ACCESS_KEY: z.string().min(1).optional(),
  ACRCLOUD_ACCESS_SECRET: z.string().min(1).optional(),
  SHAZAM_API_KEY: z.string().min(1).optional(),
  SHAZAM_BASE_URL: z.url().default("https://shazam.p.rapidapi.com"),
  APP_VERSION: z.string().default("0.1.0"),
  LOG_REQUESTS: flag(true),
});

/** The parsed configuration every module reads. */
export type Config = ReturnType<typeof loadConfig>;

/**
 * Parses an environment. Throws an Error whose message names every bad variable.
 * Exported so tests can check the messages without touching the process env.
 */
export function loadConfig(env: Record<string, string | undefined>) {
  const result = envSchema.safeParse(env);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `  ${i.path.join(".")}: ${i.message}`);
    throw new Error(`invalid environment:\n${lines.join("\n")}`);
  }
  const e = result.data;
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
     * (every function, through shared/auth.ts at import) need them, not `npm run worker`.
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
    /** Where `clientIp` reads the client's address (shared/client_ip.ts). */
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
      feedPerMin: e.FEED_RATE_LIMIT_PER_MIN,
      anonReadPerMin: e.ANON_READ_RATE_LIMIT_PER_MIN,
      anonWritePerMin: e.ANON_WRITE_RATE_LIMIT_PER_MIN,
      postsPerMin: e.POST_RATE_LIMIT_PER_MIN,
      repliesPerMin: e.REPLY_RATE_LIMIT_PER_MIN,
      likesPerMin: e.LIKES_RATE_LIMIT_PER_MIN,
      profileSearchPerMin: e.PROFILE_SEARCH_RATE_LIMIT_PER_MIN,
      recallPerMin: e.RECALL_RATE_LIMIT_PER_MIN,
      recallPerHour: e.RECALL_RATE_LIMIT_PER_HOUR,
      recallConcurrency: e.RECALL_CONCURRENCY,
      recallReadPerMin: e.RECALL_READ_RATE_LIMIT_PER_MIN,
      decisionMs: e.RATE_LIMIT_DECISION_MS,
      eventsPerMin: e.EVENTS_RATE_LIMIT_PER_MIN,
      notificationsPerMin: e.NOTIFICATIONS_RATE_LIMIT_PER_MIN,
      /** `PATCH /profiles/me` per user. */
      profileEditsPerMin: e.PROFILE_EDIT_RATE_LIMIT_PER_MIN,
      /** `jobs-worker` runs and digest schedulings per secret key. */
      jobsRunsPerMin: e.JOBS_RUN_RATE_LIMIT_PER_MIN,
    },
    jobs: {
      /** Concurrent handlers per worker (jobs-worker run, `npm run worker` loops). */
      concurrency: e.JOBS_CONCURRENCY,
      /** Per task; capped below each job's lock timeout. */
      taskTimeoutMs: e.JOBS_TASK_TIMEOUT_MS,
      /** Wall clock of one `jobs-worker/run` call; claiming stops a task timeout before it. */
      runBudgetMs: e.JOBS_RUN_BUDGET_MS,
    },
    feed: {
      forYouTtlS: e.FEED_FOR_YOU_TTL_S,
      followingTtlS: e.FEED_FOLLOWING_TTL_S,
    },
    recall: {
      /** Per provider call (each also capped by what is left of the request budget). */
      transcribeTimeoutMs: e.RECALL_TRANSCRIBE_TIMEOUT_MS,
      intentTimeoutMs: e.RECALL_INTENT_TIMEOUT_MS,
      candidatesTimeoutMs: e.RECALL_CANDIDATES_TIMEOUT_MS,
      /** ACRCloud identify and Shazam detect. */
      recognitionTimeoutMs: e.RECALL_RECOGNITION_TIMEOUT_MS,
      /** How long a complete (not degraded) provider answer is reused for identical input. */
      answerTtlS: e.RECALL_ANSWER_TTL_S,
    },
    social: {
      profileCacheTtlS: e.PROFILE_CACHE_TTL_S,
      summaryMaxReplies: e.SUMMARY_MAX_REPLIES,
      summaryMaxInputChars: e.SUMMARY_MAX_INPUT_CHARS,
      summaryLlmTimeoutMs: e.SUMMARY_LLM_TIMEOUT_MS,
      summaryRetryAfterS: e.SUMMARY_RETRY_AFTER_S,
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
    acrcloud: e.ACRCLOUD_HOST && e.ACRCLOUD_ACCESS_KEY && e.ACRCLOUD_ACCESS_SECRET
      ? {
        host: e.ACRCLOUD_HOST,
        accessKey: e.ACRCLOUD_ACCESS_KEY,
        accessSecret: e.ACRCLOUD_ACCESS_SECRET,
      }
      : null,
    shazam: e.SHAZAM_API_KEY ? { apiKey: e.SHAZAM_API_KEY, baseUrl: e.SHAZAM_BASE_URL } : null,
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

/** The process configuration, parsed once per isolate. */
export const config: Config = loadConfig(Deno.env.toObject());
