/**
 * What a function is given instead of importing it: its configuration, pools and clients,
 * built once from an environment by {@link createDeps}. `functions/<slug>/index.ts` builds
 * them from `Deno.env` and passes them to the function's `createApp(deps)`; tests build them
 * from an environment of their own (scripts/testing/test_env.ts), so nothing is read from the
 * process environment at import and any number of apps can live in one process.
 *
 * Heavy or optional parts are made on first use: the OpenAI SDK (imported at the first
 * model call), the token keys (at the first token; {@link Auth.requireKeys} checks them at
 * boot).
 *
 * @module
 */
import type { Redis } from "@upstash/redis";
import type { Context } from "hono";
import { Admission, GradientLimit } from "./http/admission.ts";
import { Auth } from "./auth/auth.ts";
import { BodyBudget } from "./http/body.ts";
import { Breakers, RedisBreakerStore } from "./resilience/breaker.ts";
import { TwoTierCache } from "./resilience/cache.ts";
import { clientIp } from "./http/client_ip.ts";
import { type Coalescer, RedisCoalescer } from "./resilience/coalesce.ts";
import { type Config, type Env, loadConfig } from "./config.ts";
import { Database } from "./data/db.ts";
import { type LeaseStore, RedisLeaseStore } from "./resilience/lease.ts";
import { metrics } from "./http/metrics.ts";
import { type OpenAIApis, openaiApis } from "./providers/openai.ts";
import { RateLimiter, type RateLimitPolicy } from "./resilience/ratelimit.ts";
import { createRedis, type RedisKeys, redisKeys } from "./data/redis.ts";
import { Search } from "./data/search.ts";

/** Everything a function's app is built from. */
export interface Deps {
  /** The environment, for each function's own settings (`section(deps.env, …)`). */
  env: Env;
  /** The settings every function shares. */
  config: Config;
  db: Database;
  redis: Redis;
  /** Keys under `REDIS_PREFIX`. */
  redisKey: RedisKeys;
  auth: Auth;
  cache: TwoTierCache;
  /** Concurrency leases in Redis (per-key slots across isolates). */
  leases: LeaseStore;
  /** Computations shared by concurrent callers, across isolates. */
  coalescer: Coalescer;
  breakers: Breakers;
  openai: OpenAIApis;
  search: Search;
  /** The isolate's adaptive in-flight limit and per-caller caps (admission.ts). */
  admission: Admission;
  /** Request-body bytes the isolate buffers at once (`BODY_BUFFER_MAX_BYTES`). */
  bodyBudget: BodyBudget;
  /** A limiter deciding in this Redis, with the configured decision window and timeout. */
  rateLimiter(policy: RateLimitPolicy): RateLimiter;
  /** Anonymous reads per client IP (`ANON_READ_RATE_LIMIT_PER_MIN`). */
  anonReads: RateLimiter;
  /** The client's address key (`CLIENT_IP_HEADER`, shared/http/client_ip.ts). */
  clientIp(c: Context): string;
  /** Closes the pools (tests, scripts; a function's isolate just ends). */
  close(): Promise<void>;
}

/** Parts a caller may supply instead of having them built (tests: a clock, a Redis). */
export type DepsOverrides = Partial<Pick<Deps, "redis" | "db">>;

/**
 * Builds the deps of `env`. Throws an Error naming every bad or missing variable (Redis
 * included: every limit, lease, breaker and cache lives there).
 */
export function createDeps(env: Env, overrides: DepsOverrides = {}): Deps {
  const config = loadConfig(env);
  const redis = overrides.redis ?? createRedis(config);
  const redisKey = redisKeys(config.redisPrefix);
  const db = overrides.db ?? new Database(config);
  const breakers = new Breakers(new RedisBreakerStore(redis, redisKey("breaker") + ":"));
  const leases = new RedisLeaseStore(redis, redisKey("lease") + ":");
  const cache = new TwoTierCache({
    redis,
    prefix: redisKey("cache:"),
    disabled: config.cacheDisabled,
  });
  const admission = new Admission(
    new GradientLimit({
      initial: Math.min(config.admission.maxInFlight, Math.max(config.admission.minInFlight, 128)),
      min: config.admission.minInFlight,
      max: config.admission.maxInFlight,
      targetMs: config.admission.targetMs,
    }),
  );
  const bodyBudget = new BodyBudget(config.body.bufferMaxBytes);
  const rateLimiter = (policy: RateLimitPolicy) =>
    new RateLimiter(policy, {
      redis,
      prefix: redisKey("rl"),
      maxWaitMs: config.redisTimeoutMs,
      decisionMs: config.limits.decisionMs,
    });

  // Keyed: deps built again in this process (tests) replace these, not add to them.
  metrics.collect(() => db.samples(), "db");
  metrics.collect(() => cache.samples(), "cache");
  metrics.collect(() => breakers.samples(), "breakers");
  metrics.collect(() => [
    { name: "admission_limit", value: admission.limiter.limit, help: "Adaptive in-flight limit" },
    { name: "admission_in_flight", value: admission.inFlight, help: "Requests holding a slot" },
    { name: "body_buffer_bytes", value: bodyBudget.used, help: "Request-body bytes buffered" },
  ], "admission");

  return {
    env,
    config,
    db,
    redis,
    redisKey,
    auth: new Auth(config),
    cache,
    leases,
    coalescer: new RedisCoalescer(redis, redisKey("coalesce") + ":"),
    breakers,
    openai: openaiApis(config.openai, breakers),
    search: new Search(config, leases),
    admission,
    bodyBudget,
    rateLimiter,
    // Leased: a client polling /health costs no Redis command per read (fail-open, never more).
    anonReads: rateLimiter({
      name: "anon-read",
      windows: [{ limit: config.limits.anonReadPerMin, windowS: 60 }],
      failOpen: true,
      leased: true,
    }),
    clientIp: (c) => clientIp(c, config.clientIpHeader),
    close: () => db.close(),
  };
}
