/**
 * `recall-resolve`: identify a song from text or audio, in the caller's recall thread.
 *
 *   POST /recall-resolve  JSON {thread_id?, text?} | multipart {audio, thread_id?, text?}
 *   → 200 {thread_id, message_id, candidates, providers, degraded}
 *
 * Order: authenticate; the body read under its limit (413 while it streams); 10/minute +
 * 100/hour per user (fail closed); validate, in the route's schemas (input.ts: 415 for
 * another Content-Type, then 400/413/415 naming what is wrong, in the order of
 * `checkInOrder`); Idempotency-Key replay; the thread must be the caller's (404);
 * the providers' answer, shared by everyone asking the same thing (kept a few minutes, and
 * computed once when asked concurrently), computed under the caller's concurrency slot
 * (5 per user); the question and the answer persisted in one statement; the `recall`
 * function's caches for the thread invalidated; answer. 55 s budget for all of it.
 *
 * Upstash round trips of a resolve nobody asked before (no Idempotency-Key): the rate limit
 * (both windows, one request); the shared answer's begin (stored answer, coalescing lock and
 * concurrency slot in one script, with the breakers' peek where due); its finish (answer
 * kept, result published, lock and slot released, the providers' successes recorded for
 * their breakers); the recall caches' invalidation. Four HTTP requests, fewer when the answer
 * is kept (in this isolate: none for it) or when concurrent resolves share a pipeline.
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { AuthUser } from "../../shared/auth/auth.ts";
import { Budget } from "../../shared/http/budget.ts";
import type { Deps } from "../../shared/deps.ts";
import { invalidateRecallThread } from "../../shared/domain/recall_cache.ts";
import { type App, bearerAuth, createFunctionApp } from "../../shared/http/app.ts";
import { DeferredOutcomes } from "../../shared/resilience/breaker.ts";
import { SharedResults } from "../../shared/resilience/coalesce_slot.ts";
import { metrics } from "../../shared/http/metrics.ts";
import { notFound } from "../../shared/http/problem.ts";
import { rateLimit } from "../../shared/resilience/ratelimit.ts";
import { type RecallResolveConfig, recallResolveConfig } from "./config.ts";
import { Idempotency } from "./idempotency.ts";
import {
  bodyLimitFor,
  checkInOrder,
  formRequest,
  jsonRequest,
  ResolveForm,
  ResolveHeaders,
  ResolveJson,
  type ResolveRequest,
} from "./input.ts";
import { Providers } from "./providers.ts";
import * as q from "./queries.ts";
import { type Resolution, resolve, type ResolveInput, resolveInput, sha256Hex } from "./resolve.ts";

const budgetMs = 55_000;
/** A slot outlives a normal request; an isolate that dies mid-request frees it by expiry. */
const leaseTtlMs = budgetMs + 5_000;
const slotPolicy = "recall-concurrency";

const ProviderStatus = z.enum([
  "ok",
  "no_match",
  "timeout",
  "error",
  "circuit_open",
  "not_configured",
]);
const Candidate = z.object({
  title: z.string(),
  artist: z.string(),
  album: z.string().optional(),
  year: z.number().int().optional(),
  confidence: z.number().min(0).max(1),
  sources: z.array(z.string()),
  song_id: z.uuid().optional(),
  reason: z.string().optional(),
}).openapi("RecallCandidate");
const ResolveAnswer = z.object({
  thread_id: z.uuid(),
  message_id: z.uuid(),
  candidates: z.array(Candidate),
  providers: z.record(z.string(), ProviderStatus).openapi({
    description: "catalog, transcription, intent, candidates, acrcloud, shazam (those asked)",
  }),
  degraded: z.boolean(),
}).openapi("RecallResolveAnswer");
type Answer = z.infer<typeof ResolveAnswer>;

/** What a resolve works with, built once in {@link createApp}. */
interface Resolver {
  deps: Deps;
  settings: RecallResolveConfig;
  providers: Providers;
  /** The providers' answers, shared by identical questions. */
  answers: SharedResults;
}

/**
 * The `recall-resolve` app on `deps`. Throws at once when one of its variables (`RECALL_*`,
 * `ACRCLOUD_*`, `SHAZAM_*`) is bad.
 */
export function createApp(deps: Deps): App {
  const settings = recallResolveConfig(deps.env);
  const resolver: Resolver = {
    deps,
    settings,
    providers: new Providers(deps, settings),
    answers: new SharedResults(deps.redis, {
      prefix: deps.redisKey("coalesce") + ":",
      slotPrefix: deps.redisKey("lease") + ":", // the isolate's lease store's slots
    }),
  };
  const idempotency = new Idempotency(deps);
  const limiter = deps.rateLimiter({
    name: "recall",
    windows: [
      { limit: settings.limits.perMin, windowS: 60 },
      { limit: settings.limits.perHour, windowS: 3600 },
    ],
    failOpen: false, // every resolve may cost money: refuse (503) rather than run unlimited
  });
  const app = createFunctionApp("recall-resolve", deps, { budgetMs, maxBodyBytes: bodyLimitFor });

  const route = createRoute({
    method: "post",
    path: "/",
    summary: "Identify a song from text or audio",
    security: bearerAuth,
    middleware: [
      deps.auth.requireUser(),
      rateLimit(limiter, (c) => c.var.user!.id),
    ] as const,
    request: {
      headers: ResolveHeaders,
      body: {
        // Either form; which one, the Content-Type says (checked with the headers).
        required: false,
        content: {
          "application/json": { schema: ResolveJson },
          "multipart/form-data": { schema: ResolveForm },
        },
      },
    },
    responses: {
      200: {
        description: "candidates",
        content: { "application/json": { schema: ResolveAnswer } },
      },
    },
  });

  app.openapi(
    route,
    async (c) => {
      const { kind, idempotencyKey, keyProblem } = c.req.valid("header");
      if (keyProblem) throw keyProblem; // answered in checkInOrder already; never taken here
      const request = kind === "json"
        ? await jsonRequest(c, c.req.valid("json"))
        : await formRequest(c, c.req.valid("form"));
      const user = c.var.user!;
      const budget = c.var.budget;
      const input = await resolveInput(request.text, request.audio);
      const work = () => resolveInThread(resolver, user, request, input, budget);
      if (idempotencyKey === undefined) return c.json(await work(), 200);
      const { body, replayed } = await idempotency.run(
        user.id,
        await sha256Hex(idempotencyKey),
        // The request as sent, byte for byte: a body that differs only in what validation
        // normalizes (spacing, an id's case) is another request, refused with a 422.
        request.fingerprint,
        work,
        { waitMs: budget.remaining(), signal: budget.aborted },
      );
      if (replayed) {
        c.header("idempotent-replayed", "true");
        metrics.inc("recall_resolutions_total", { path: "replayed" });
      }
      return c.json(body, 200);
    },
    // The answers in their order, and a check's own answer (413, 415, "send text or
    // audio"), from input.ts; any other failure is the app's usual 400 naming the fields.
    async (result, c) => {
      await checkInOrder(result, c);
      return app.defaultHook?.(result, c);
    },
  );

  return app;
}

/** Everything a resolve does after parsing: thread check, providers, persistence. */
async function resolveInThread(
  resolver: Resolver,
  user: AuthUser,
  request: ResolveRequest,
  input: ResolveInput,
  budget: Budget,
): Promise<Answer> {
  const { db, cache } = resolver.deps;
  if (request.threadId) {
    const [thread] = await db.asUser(user, (tx) => q.liveThread(tx, request.threadId!), budget);
    if (!thread) throw notFound("thread");
  }

  const resolution = await sharedResolution(resolver, user.id, input, budget);

  const top = resolution.candidates[0];
  const summary = top
    ? `"${top.title}" by ${top.artist}` +
      (resolution.candidates.length > 1 ? ` (+${resolution.candidates.length - 1} more)` : "")
    : resolution.degraded
    ? "No match found; some providers did not answer."
    : "No match found.";
  const userContent = (request.text ?? resolution.transcript ?? "").slice(0, 4000);
  const [saved] = await db.asUser(
    user,
    (tx) =>
      q.insertExchange(tx, {
        threadId: request.threadId ?? null,
        title: (request.text ?? "Audio recall").slice(0, 80),
        userType: request.audio ? "audio" : "text",
        userContent,
        assistantType: top || !resolution.degraded ? "candidates" : "error",
        summary,
        candidates: {
          candidates: resolution.candidates,
          providers: resolution.providers,
          degraded: resolution.degraded,
        },
      }),
    budget,
  );
  if (!saved) throw notFound("thread"); // deleted while we were resolving

  // The recall reads are cached; this thread and the caller's list just changed.
  const created = !request.threadId;
  await invalidateRecallThread(cache, user.id, saved.thread_id, { created }).catch((err) =>
    console.warn(JSON.stringify({ msg: "recall cache invalidation failed", error: String(err) }))
  );

  return {
    thread_id: saved.thread_id,
    message_id: saved.assistant_message_id,
    candidates: resolution.candidates,
    providers: resolution.providers,
    degraded: resolution.degraded,
  };
}

/**
 * The providers' answer for `input`: kept a few minutes (degraded answers are not kept), else
 * from whoever is already computing it (in this isolate or another), else computed here, in
 * two round trips (shared/resilience/coalesce_slot.ts).
 *
 * The concurrency slot is taken by the computation, not as route middleware: only the caller
 * that actually calls providers holds one, and a follower waiting for somebody else's
 * computation (or reading the kept answer) holds none, so a trending query cannot use up its
 * askers' slots. A caller refused a slot (its own 5 are busy) takes no lock either, so nobody
 * waits for it; callers of this isolate that were sharing its attempt try again.
 */
async function sharedResolution(
  { deps, settings, providers, answers }: Resolver,
  userId: string,
  input: ResolveInput,
  budget: Budget,
): Promise<Resolution> {
  const { value, computed } = await answers.run(
    `recall:resolve:${input.key}`,
    (leader) => {
      budget.aborted.throwIfAborted();
      // The providers' successes reach their breakers with the finish, in its HTTP request.
      const deferred = new DeferredOutcomes();
      leader.alongFinish(() => deferred.flush());
      // No signal: the work is shared with followers, so one asker going away must not
      // abort it; its own budget, same deadline.
      return resolve(providers, input, new Budget(budget.remaining()), deferred);
    },
    {
      store: deps.config.cacheDisabled ? undefined : {
        key: deps.redisKey("recall", "answer", input.key),
        ttlMs: settings.answerTtlS * 1000,
        keep: (resolution) => !resolution.degraded,
      },
      slot: {
        name: slotPolicy,
        key: userId,
        limit: settings.limits.concurrency,
        ttlMs: leaseTtlMs,
        failOpen: false, // every resolve may cost money: 503 rather than unlimited
        decisionMs: deps.config.limits.decisionMs,
      },
      lockTtlMs: budget.remaining() + 5_000,
      waitMs: budget.remaining(),
      resultTtlMs: 10_000,
      signal: budget.aborted,
      // The breakers' state, where this isolate's is stale, rides in the begin's HTTP request.
      alongBegin: () => providers.peek(input.audio !== undefined),
    },
  );
  metrics.inc("recall_resolutions_total", { path: computed ? "computed" : "shared" });
  return value;
}
