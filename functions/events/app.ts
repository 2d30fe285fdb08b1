/**
 * `events`: analytics ingestion. `POST /events` takes 1–100 events per call and stores them
 * with one multi-row insert, answering 202 `{accepted}` only once the rows are committed:
 * an accepted event is never lost. Signed-in senders are limited per user, anonymous ones
 * (allowed: `verify_jwt` is off for this function) per IP; a token, when sent, must be valid.
 *
 * @module
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import type { Deps } from "../../shared/deps.ts";
import { type App, type AppEnv, bearerAuth, createFunctionApp } from "../../shared/http/app.ts";
import { rateLimit } from "../../shared/resilience/ratelimit.ts";
import { eventsConfig } from "./config.ts";
import * as q from "./queries.ts";

const maxEventsPerCall = 100;
const maxPropertiesBytes = 4096;
const maxAgeMs = 30 * 86_400_000; // offline clients flush late, but not months late
const maxSkewMs = 5 * 60_000; // client clocks run ahead a little
const eventName = /^[a-z][a-z0-9_]{0,63}(\.[a-z][a-z0-9_]{0,63}){0,3}$/;

/** Whether every key and string inside `value` is well-formed Unicode. */
function wellFormedDeep(value: unknown): boolean {
  if (typeof value === "string") return value.isWellFormed();
  if (Array.isArray(value)) return value.every(wellFormedDeep);
  if (value && typeof value === "object") {
    return Object.entries(value).every(([k, v]) => k.isWellFormed() && wellFormedDeep(v));
  }
  return true;
}

const Event = z.object({
  name: z.string().regex(eventName, "lowercase dotted name like `player.track_started`"),
  properties: z.record(z.string(), z.unknown()).optional(),
  occurred_at: z.iso.datetime({ offset: true }).optional(),
}).superRefine((event, ctx) => {
  const json = event.properties ? JSON.stringify(event.properties) : "";
  if (new TextEncoder().encode(json).length > maxPropertiesBytes) {
    ctx.addIssue({
      code: "custom",
      path: ["properties"],
      message: `larger than ${maxPropertiesBytes} bytes of JSON`,
    });
  } else if (json.includes("\\u0000")) {
    // jsonb cannot store NUL characters
    ctx.addIssue({ code: "custom", path: ["properties"], message: "contains a NUL character" });
  } else if (event.properties && !wellFormedDeep(event.properties)) {
    // JSON.stringify escapes a lone surrogate as `\ud800`, which jsonb refuses
    ctx.addIssue({
      code: "custom",
      path: ["properties"],
      message: "must be well-formed Unicode (no lone surrogate such as \\ud800)",
    });
  }
  if (event.occurred_at) {
    const at = Date.parse(event.occurred_at);
    if (at > Date.now() + maxSkewMs || at < Date.now() - maxAgeMs) {
      ctx.addIssue({
        code: "custom",
        path: ["occurred_at"],
        message: "must be within the last 30 days and not in the future",
      });
    }
  }
});

const EventsBody = z.object({
  events: z.array(Event).min(1).max(maxEventsPerCall),
  /** A client-chosen device/session id, for anonymous analytics (we never store IPs). */
  anonymous_id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "1–64 of [A-Za-z0-9_-]").optional(),
}).openapi("EventsBatch");

const Accepted = z.object({ accepted: z.number().int() }).openapi("EventsAccepted");

/** The `events` app on `deps`. Throws at once when one of its variables is bad. */
export function createApp(deps: Deps): App {
  const settings = eventsConfig(deps.env);
  // Analytics must not be lost to a Redis hiccup, and an insert is cheap: fail open. Leased
  // (blocks of tokens spent in the isolate, ratelimit_lease.ts): a steady sender costs no Redis
  // command per batch, and no isolate ever admits more than the limit.
  const userLimiter = deps.rateLimiter({
    name: "events",
    windows: [{ limit: settings.perUserPerMin, windowS: 60 }],
    failOpen: true,
    leased: true,
  });
  const anonLimiter = deps.rateLimiter({
    name: "events-anon",
    windows: [{ limit: settings.anonPerMin, windowS: 60 }],
    failOpen: true,
    leased: true,
  });
  const app = createFunctionApp("events", deps, { anonymousBodies: true });

  // Per user when signed in, per client IP when anonymous.
  const limitUser = rateLimit(userLimiter, (c) => c.get("user")!.id);
  const limitAnon = rateLimit(anonLimiter, deps.clientIp);
  const limitSender: MiddlewareHandler<AppEnv> = async (c, next) => {
    await (c.var.user ? limitUser : limitAnon)(c, next);
  };

  const route = createRoute({
    method: "post",
    path: "/",
    summary: "Record analytics events (1–100)",
    security: bearerAuth,
    middleware: [deps.auth.optionalUser(), limitSender] as const,
    request: {
      body: { content: { "application/json": { schema: EventsBody } }, required: true },
    },
    responses: {
      202: {
        description: "stored (committed)",
        content: { "application/json": { schema: Accepted } },
      },
    },
  });

  app.openapi(route, async (c) => {
    const { events, anonymous_id } = c.req.valid("json");
    const user = c.var.user;
    const rows = events.map((e) => ({
      name: e.name,
      properties: e.properties ?? {},
      occurred_at: e.occurred_at ?? null,
    }));
    const result = await deps.db.asUser(
      user,
      (tx) => q.insertEvents(tx, user?.id ?? null, anonymous_id ?? null, rows),
      c.var.budget,
    );
    return c.json({ accepted: result.count }, 202);
  });

  return app;
}
