/**
 * `npm run bench:middleware`: what each piece of a request's path costs, one by one (issue 12,
 * goal 4), in process (no sockets): `app.fetch` of a signed-in GET, sequentially, after a
 * warm-up. Rows add one piece at a time, in the order a request meets them:
 *
 * 1. a bare Hono app answering a fixed JSON body (the baseline);
 * 2. each of `functionMiddleware` (shared/http/app.ts: what every function runs), cumulatively;
 * 3. the route's own: `requireUser` (token verified once per isolate, then cached), a leased
 *    rate limit (as the feed's), the zod query validator of an OpenAPI route;
 * 4. the local gateway in front (`verify_jwt`, the forwarded request).
 *
 * Each row: µs per request of main-thread CPU (/proc/thread-self/schedstat) and its increment
 * over the row above. The median of `MIDDLEWARE_ROUNDS` (5) rounds of `MIDDLEWARE_N` (5,000)
 * requests, rows interleaved per round so that the machine's noise falls on all alike.
 *
 * Env: DATABASE_URL, REDIS_URL (as for `npm test`: deps are real, though no row queries).
 *
 * @module
 */
import { Hono } from "hono";
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { type App, type AppEnv, functionMiddleware } from "../../shared/http/app.ts";
import { rateLimit } from "../../shared/resilience/ratelimit.ts";
import { createGateway } from "../dev/gateway.ts";
import { functionTestEnv } from "../testing/test_env.ts";
import { DEMO_USER_ID } from "../testing/seed.ts";

const n = Number(Deno.env.get("MIDDLEWARE_N") ?? 5000);
const rounds = Number(Deno.env.get("MIDDLEWARE_ROUNDS") ?? 5);
const env = await functionTestEnv({ env: { LOG_REQUESTS: "false" } });
const token = await env.keys.mint(DEMO_USER_ID);
const body = { items: [{ id: DEMO_USER_ID, body: "x".repeat(200) }], next_cursor: null };

const chain = functionMiddleware("bench", env.deps);
const limiter = env.deps.rateLimiter({
  name: "bench",
  windows: [{ limit: 1_000_000_000, windowS: 60 }],
  failOpen: true,
  leased: true,
});
const routePieces = [
  ["requireUser", env.deps.auth.requireUser()],
  ["rateLimit (leased)", rateLimit(limiter, (c) => c.var.user!.id)],
] as const;

type Fetch = (req: Request) => Response | Promise<Response>;
const rows: { name: string; fetch: Fetch; url: string }[] = [];
const url = "http://127.0.0.1/bench/x?limit=20";

// 1-2: the app-wide chain, one more piece per row.
for (let k = 0; k <= chain.length; k++) {
  const app = new Hono().basePath("/bench");
  for (const [, mw] of chain.slice(0, k)) app.use(mw);
  app.get("/x", (c) => c.json(body));
  rows.push({ name: k ? `+ ${chain[k - 1][0]}` : "bare Hono, fixed JSON", fetch: app.fetch, url });
}
// 3: the route's pieces, then the validator on an OpenAPI route.
for (let k = 1; k <= routePieces.length; k++) {
  const app = new Hono<AppEnv>().basePath("/bench");
  for (const [, mw] of chain) app.use(mw);
  for (const [, mw] of routePieces.slice(0, k)) app.use("/x", mw);
  app.get("/x", (c) => c.json(body));
  rows.push({ name: `+ ${routePieces[k - 1][0]}`, fetch: app.fetch, url });
}
const openapi = new OpenAPIHono<AppEnv>().basePath("/bench");
for (const [, mw] of chain) openapi.use(mw);
openapi.openapi(
  createRoute({
    method: "get",
    path: "/x",
    middleware: routePieces.map(([, mw]) => mw),
    request: {
      query: z.object({
        kind: z.enum(["for-you", "following"]).default("for-you"),
        limit: z.coerce.number().int().min(1).default(20),
        cursor: z.string().optional(),
      }),
    },
    responses: { 200: { description: "ok" } },
  }),
  (c) => c.json(body, 200),
);
rows.push({ name: "+ zod query validator (OpenAPI route)", fetch: openapi.fetch, url });
// 4: the gateway in front of that same app (mounted as a function would be).
const gateway = await createGateway({
  deps: env.deps,
  jwks: JSON.parse(env.env.SUPABASE_JWKS!),
  apps: { bench: () => openapi as unknown as App },
});
rows.push({
  name: "+ local gateway (verify_jwt, forwarded request)",
  fetch: (req) => gateway.fetch(req, remote),
  url: "http://127.0.0.1/functions/v1/bench/x?limit=20",
});
const remote = {
  remoteAddr: { transport: "tcp" as const, hostname: "127.0.0.1", port: 5555 },
  completed: Promise.resolve(),
} as unknown as Deno.ServeHandlerInfo;

const cpuUs = () =>
  Number(Deno.readTextFileSync("/proc/thread-self/schedstat").split(" ")[0]) / 1e3;
const headers = { authorization: `Bearer ${token}` };

async function measure(row: (typeof rows)[number], count: number): Promise<number> {
  const start = cpuUs();
  for (let i = 0; i < count; i++) {
    const res = await row.fetch(new Request(row.url, { headers }));
    if (res.status !== 200) throw new Error(`${row.name}: ${res.status} ${await res.text()}`);
    await res.arrayBuffer();
  }
  return (cpuUs() - start) / count;
}

try {
  for (const row of rows) await measure(row, 1000); // warm: JIT, token cache, leases
  const samples = rows.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++) {
    for (const [i, row] of rows.entries()) samples[i].push(await measure(row, n));
  }
  const median = (xs: number[]) => xs.toSorted((a, b) => a - b)[Math.floor(xs.length / 2)];
  const us = samples.map(median);
  const lines = [
    `| piece (cumulative) | µs CPU / request | + µs |`,
    `| --- | ---: | ---: |`,
    ...rows.map((row, i) =>
      `| ${row.name} | ${us[i].toFixed(1)} | ${i ? (us[i] - us[i - 1]).toFixed(1) : "—"} |`
    ),
  ];
  console.log(
    `In-process app.fetch, median of ${rounds} rounds x ${n} sequential requests, ${
      new Date().toISOString().slice(0, 10)
    }, Deno ${Deno.version.deno}, load ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}\n`,
  );
  console.log(lines.join("\n"));
} finally {
  await env.close();
}
