/**
 * `npm run bench`: the benchmark report. Seeds a large dataset, starts the stack, and measures
 * each case at fixed arrival rates on this machine in one run: the floor (bare Deno.serve,
 * one indexed query + one Redis GET), our endpoints, and the naive "before" feed (a new
 * connection per request, N+1 profile lookups). For each case: the highest rate held with
 * p95 under its target and no errors, p50/p95/p99 at a common rate, database statements,
 * Redis HTTP requests (counted by the bridge), Redis commands (`INFO commandstats`, a script's
 * inner calls included, as Upstash bills them), CPU ms of the serving process(es)
 * (/proc/<pid>/stat utime + stime; see costs.ts) and provider calls per request, and ratios to
 * the floor and to "before". Writes bench/results.json and bench/results.md.
 *
 * Redis: a redis-server of its own (from PATH, no persistence), so that `INFO commandstats`,
 * which is server-wide, counts only this benchmark's commands; BENCH_OWN_REDIS=false (or no
 * redis-server on PATH) uses REDIS_URL instead, where other clients' commands add noise (an
 * idle baseline measured before the cases is subtracted, which helps only against steady noise).
 *
 * Env: DATABASE_URL (admin URL of a server to create the bench database on), REDIS_URL,
 * BENCH_OWN_REDIS (true), BENCH_USERS (10000), BENCH_POSTS (200000), BENCH_FOLLOWS (50 per
 * user), BENCH_SONGS (20000), BENCH_STEP_S (8), BENCH_COMMON_RATE (100), BENCH_IDLE_S (5: the
 * idle baseline), BENCH_CASES (comma list of case-name prefixes to run a subset; `cold` is the
 * cold-start measurement), COLD_RUNS (15).
 *
 * Cold start (cold_start.ts, first, while the stacks are idle): each function spawned as
 * `deno run -A functions/<slug>/index.ts` on this database and bridge, time to its first real
 * answer beside a bare `Deno.serve` hello world spawned the same way.
 *
 * @module
 */
import postgres from "postgres";
import { LoadClient, type LoadResponse } from "../../loadtest/lib/client.ts";
import { runSchedule } from "../../loadtest/lib/executors.ts";
import { Registry } from "../../loadtest/lib/stats.ts";
import { auth, type LoadUser, seededUsers } from "../../loadtest/lib/users.ts";
import { bootstrap, createDatabase, databaseUrl, dropDatabase, migrate } from "../dev/db.ts";
import { startOpenAIFake } from "../testing/fakes/openai.ts";
import { freePort, repoRoot, startRedisServer } from "../dev/local_services.ts";
import { seed } from "../testing/seed.ts";
import { type ServerProcess, spawnServer, startStack } from "../dev/stack.ts";
import { CommandCounter, commandDelta, cpuMs, servingPids, totalCalls } from "./costs.ts";
import {
  coldModelAnswer,
  type ColdRow,
  coldStartEnv,
  coldStartMarkdown,
  measureColdStart,
} from "./cold_start.ts";

const env = (name: string, fallback: number) => Number(Deno.env.get(name) ?? fallback);
const stepS = env("BENCH_STEP_S", 8);
const commonRate = env("BENCH_COMMON_RATE", 100);
const rates = [25, 50, 100, 200, 300, 400, 600, 800, 1000, 1300, 1600, 2000, 2500, 3000, 4000];
const adminUrl = Deno.env.get("DATABASE_URL") ?? "postgres://postgres@127.0.0.1:5432/postgres";
const sharedRedisUrl = Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379";
const ownRedis = Deno.env.get("BENCH_OWN_REDIS") !== "false";
const idleS = env("BENCH_IDLE_S", 5);
const round = (x: number) => Math.round(x * 100) / 100;
const only = Deno.env.get("BENCH_CASES")?.split(",");
const coldName = "cold start";
const runCold = !only || only.some((o) => coldName.startsWith(o));

/** One benchmark case: a request, where it goes, and its latency target. */
interface Case {
  name: string;
  server: () => ServerProcess;
  request: (client: LoadClient, i: number) => Promise<LoadResponse>;
  /** p95 target for "highest rate held" (ms). */
  targetMs: number;
  /** Statements per request when the server reports none (the floor and "before", by construction). */
  knownStatements?: number;
  expectStatus?: number;
}

interface Measured {
  rate: number;
  p50: number;
  p95: number;
  p99: number;
  errors: number;
  dropped: number;
  dbStatements: number;
  redisRequests: number;
  /** Redis commands per request (INFO commandstats, INFO excluded, idle baseline subtracted). */
  redisCommands?: number;
  /** The same per command name (e.g. evalsha, get, incrby), per request. */
  redisCommandsByName?: Record<string, number>;
  /** CPU ms per request of the serving process(es); null where /proc is missing. */
  cpuMs?: number | null;
  providerCalls: number;
}

/** What the servers and Redis do with no load (the idle baseline). */
interface Idle {
  seconds: number;
  /** Redis commands/s (INFO excluded) with every server up and no load. */
  redisCommandsPerS: number;
  redisCommandsByName: Record<string, number>;
  /** CPU ms/s of each server's serving process(es) with no load. */
  cpuMsPerS: Record<string, number | null>;
  /** Which Redis was counted: "own" (a redis-server of this run) or "shared" (REDIS_URL). */
  redis: "own" | "shared";
}

if (Deno.args[0] === "--report") {
  // Rewrites bench/results.md from bench/results.json (e.g. after merging runs by hand).
  const results = JSON.parse(await Deno.readTextFile(`${repoRoot}/bench/results.json`));
  await Deno.writeTextFile(`${repoRoot}/bench/results.md`, toMarkdown(results));
  console.log(toMarkdown(results));
  Deno.exit(0);
}

const cleanups: (() => Promise<unknown>)[] = [];
const log = (msg: string) => console.log(`[bench] ${msg}`);

try {
  // --- data -----------------------------------------------------------------------------
  const dbName = `rockout_bench_${crypto.randomUUID().slice(0, 8)}`;
  await createDatabase(adminUrl, dbName);
  cleanups.push(() => dropDatabase(adminUrl, dbName));
  const dbUrl = databaseUrl(adminUrl, dbName);
  await bootstrap(dbUrl);
  await migrate(dbUrl);
  const admin = postgres(dbUrl, { max: 2, onnotice: () => {} });
  const seeded = await seed(
    admin,
    {
      users: env("BENCH_USERS", 10_000),
      posts: env("BENCH_POSTS", 200_000),
      follows: env("BENCH_FOLLOWS", 50),
      ...(Deno.env.get("BENCH_SONGS") ? { songs: env("BENCH_SONGS", 20_000) } : {}),
    } as Parameters<typeof seed>[1],
  );
  log(`seeded ${JSON.stringify(seeded)}`);
  const postIds = (await admin<{ id: string }[]>`
    select id from posts where status = 'published' order by hot_score desc limit 500`).map((r) =>
    r.id
  );
  const profileIds = (await admin<{ id: string }[]>`select id from profiles order by id limit 1000`)
    .map((r) => r.id);
  await admin.end();

  // --- infrastructure we count: Redis, the Redis bridge and the fake model ---------------
  // Redis of its own: INFO commandstats is server-wide, so on a shared Redis the commands of
  // anything else running on this machine would be counted as ours.
  let redisUrl = sharedRedisUrl;
  let redisKind: Idle["redis"] = "shared";
  if (ownRedis) {
    try {
      const server = await startRedisServer(freePort());
      cleanups.push(() => server.stop());
      redisUrl = server.url;
      redisKind = "own";
    } catch (err) {
      log(
        `no redis-server of its own (${(err as Error).message}): counting on ${redisUrl}, ` +
          "where other clients' commands add noise",
      );
    }
  }
  const commands = new CommandCounter(redisUrl);
  cleanups.push(() => commands.close());
  // The bridge runs in its own process (as Upstash is a service of its own); we read its count.
  const bridgeToken = crypto.randomUUID();
  const bridgeProcess = await spawnServer(`${repoRoot}/scripts/dev/redis_bridge.ts`, freePort(), {
    REDIS_URL: redisUrl,
    UPSTASH_REDIS_REST_TOKEN: bridgeToken,
  }, (line) => line.startsWith("http://"));
  cleanups.push(() => bridgeProcess.stop());
  const bridge = { url: bridgeProcess.url, token: bridgeToken };
  const redisRequests = async () =>
    (await (await fetch(`${bridge.url}/__bridge/stats`, {
      headers: { authorization: `Bearer ${bridgeToken}` },
    })).json()).requests as number;
  const openai = startOpenAIFake({
    chat: (req) =>
      req.schemaName === "recall_candidates" || req.schemaName === "candidates"
        ? {
          candidates: [{
            title: "Invented Song",
            artist: "Made Up Band",
            confidence: 0.6,
            reason: "bench",
          }],
        }
        : {
          lyrics_fragment: null,
          title_hint: null,
          artist_hint: null,
          description: "bench",
          era: null,
          summary: "bench",
        },
  });
  openai.behave({ delayMs: 300 });
  cleanups.push(() => openai.close());
  const prefix = `bench:${dbName}:`;
  const stackEnv = {
    DATABASE_URL: dbUrl,
    UPSTASH_REDIS_REST_URL: bridge.url,
    UPSTASH_REDIS_REST_TOKEN: bridge.token,
    REDIS_PREFIX: prefix,
    OPENAI_API_KEY: "bench",
    OPENAI_BASE_URL: openai.baseUrl,
    // The benchmark measures capacity, not the per-user limits.
    FEED_RATE_LIMIT_PER_MIN: "100000000",
    RECALL_RATE_LIMIT_PER_MIN: "100000000",
    RECALL_RATE_LIMIT_PER_HOUR: "100000000",
    RECALL_CONCURRENCY: "100000",
    ANON_READ_RATE_LIMIT_PER_MIN: "100000000",
    PROFILE_SEARCH_RATE_LIMIT_PER_MIN: "100000000",
  };
  const stack = await startStack(freePort(), stackEnv);
  cleanups.push(() => stack.stop());
  const noCache = await startStack(freePort(), {
    ...stackEnv,
    CACHE_DISABLED: "true",
    REDIS_PREFIX: `${prefix}nc:`,
  });
  cleanups.push(() => noCache.stop());
  const floor = await spawnServer(`${repoRoot}/scripts/bench/floor.ts`, freePort(), {
    DATABASE_URL: dbUrl,
    UPSTASH_REDIS_REST_URL: bridge.url,
    UPSTASH_REDIS_REST_TOKEN: bridge.token,
  }, (l) => l === "ready");
  cleanups.push(() => floor.stop());
  const before = await spawnServer(`${repoRoot}/scripts/bench/before.ts`, freePort(), {
    DATABASE_URL: dbUrl,
  }, (l) => l === "ready");
  cleanups.push(() => before.stop());
  log("servers up");

  const users: LoadUser[] = await seededUsers(2000);
  const user = (i: number) => users[i % users.length];
  const ids100 = (i: number) =>
    Array.from({ length: 100 }, (_, k) => profileIds[(i * 7 + k) % profileIds.length]);

  const allCases: Case[] = [
    {
      name: "floor",
      server: () => floor,
      targetMs: 50,
      knownStatements: 1,
      request: (c) => c.get("/"),
    },
    {
      name: "feed (warm)",
      server: () => stack,
      targetMs: 50,
      request: (c, i) =>
        c.get(`/functions/v1/feed?limit=20${i % 2 ? "&kind=following" : ""}`, {
          headers: auth(user(i % 50)),
        }),
    },
    {
      name: "feed (caches disabled)",
      server: () => noCache,
      targetMs: 50,
      request: (c, i) =>
        c.get(`/functions/v1/feed?limit=20${i % 2 ? "&kind=following" : ""}`, {
          headers: auth(user(i)),
        }),
    },
    {
      name: "recall-resolve (text, 300 ms model)",
      server: () => stack,
      // A cold resolve is two model steps one after the other (intent, then candidates).
      targetMs: 2 * 300 + 100,
      request: (c, i) =>
        c.post("/functions/v1/recall-resolve", {
          text: `bench query number ${i} ${crypto.randomUUID().slice(0, 6)}`,
        }, {
          headers: auth(user(i)),
        }),
    },
    {
      name: "thread-summary (warm)",
      server: () => stack,
      targetMs: 50,
      request: (c, i) =>
        c.get(`/functions/v1/thread-summary/${postIds[i % 20]}`, { headers: auth(user(i)) }),
    },
    {
      name: "profiles?ids= (100 ids)",
      server: () => stack,
      targetMs: 50,
      request: (c, i) =>
        c.get(`/functions/v1/profiles?ids=${ids100(i % 10).join(",")}`, { headers: auth(user(i)) }),
    },
    {
      // The everyday app as the `mixed` load scenario has it (one request per iteration, in
      // turn): the cost model of the README's monthly estimate.
      name: "mixed (feed, notifications, events, thread-summary)",
      server: () => stack,
      targetMs: 50,
      request: (c, i) => {
        const h = { headers: auth(user(i)) };
        switch (i % 4) {
          case 0:
            return c.get("/functions/v1/feed?limit=20", h);
          case 1:
            return c.get("/functions/v1/notifications?limit=20", h);
          case 2:
            return c.post("/functions/v1/events", {
              events: [
                { name: "screen.view", properties: { screen: "feed" } },
                { name: "post.impression", properties: { position: i } },
              ],
            }, h);
          default:
            return c.get(`/functions/v1/thread-summary/${postIds[i % 20]}`, h);
        }
      },
    },
    {
      name: "before: feed, new connection + N+1",
      server: () => before,
      targetMs: 50,
      knownStatements: 21, // the page, then one profile per post (20)
      request: (c) => c.get("/feed"),
    },
  ];
  const cases = allCases.filter((c) => !only || only.some((o) => c.name.startsWith(o)));

  // --- cold start: first, while the stacks are idle ---------------------------------------
  let coldStart: ColdRow[] | undefined;
  if (runCold) {
    // A model of its own that answers at once: the bench's answers after 300 ms.
    const model = startOpenAIFake({ chat: coldModelAnswer });
    try {
      const cold = await coldStartEnv({
        databaseUrl: dbUrl,
        upstash: bridge,
        openaiBaseUrl: model.baseUrl,
        redisPrefix: `${prefix}cold:`,
      });
      coldStart = await measureColdStart({ ...cold, runs: env("COLD_RUNS", 15), log });
      log(`cold start:\n${coldStartMarkdown(coldStart)}`);
    } finally {
      await model.close();
    }
  }

  // --- idle baseline: what Redis and each server do with no load -------------------------
  const serverNames = new Map<ServerProcess, string>([
    [floor, "floor"],
    [stack, "stack"],
    [noCache, "stack (caches disabled)"],
    [before, "before"],
  ]);
  const servers = new Map(
    cases.map((c) => [serverNames.get(c.server()) ?? c.name, c.server()]),
  );
  const pidsOf = (server: ServerProcess) => servingPids(server.pid);
  const idle: Idle = await (async () => {
    const cpuBefore = new Map<string, number | null>();
    for (const [name, server] of servers) cpuBefore.set(name, await cpuMs(pidsOf(server)));
    const callsBefore = await commands.snapshot();
    const start = performance.now();
    await new Promise((r) => setTimeout(r, idleS * 1000));
    const seconds = (performance.now() - start) / 1000;
    const delta = commandDelta(callsBefore, await commands.snapshot());
    const cpuMsPerS: Record<string, number | null> = {};
    for (const [name, server] of servers) {
      const after = await cpuMs(pidsOf(server));
      const before = cpuBefore.get(name);
      cpuMsPerS[name] = after === null || before == null ? null : round((after - before) / seconds);
    }
    return {
      seconds: round(seconds),
      redisCommandsPerS: round(totalCalls(delta) / seconds),
      redisCommandsByName: Object.fromEntries(
        Object.entries(delta).map(([k, v]) => [k, round(v / seconds)]),
      ),
      cpuMsPerS,
      redis: redisKind,
    };
  })();
  log(`idle baseline: ${JSON.stringify(idle)}`);

  /** Runs `kase` at `rate` for `seconds`; the numbers of that run. */
  const measure = async (kase: Case, rate: number, seconds: number): Promise<Measured> => {
    const metrics = new Registry();
    const client = new LoadClient(kase.server().url, metrics);
    const pids = pidsOf(kase.server());
    const redisBefore = await redisRequests();
    const providerBefore = openai.chatCalls() + openai.transcriptionCalls();
    const callsBefore = await commands.snapshot();
    const cpuBefore = await cpuMs(pids);
    const start = performance.now();
    let dbStatements = 0;
    await runSchedule(
      { executor: "constant-arrival-rate", rate, durationS: seconds, maxVUs: Math.max(50, rate) },
      async ({ iteration }) => {
        const res = await kase.request(client, iteration);
        const calls = res.headers.get("server-timing")?.match(/db;dur=[\d.]+;desc="(\d+) calls"/);
        if (calls) dbStatements += Number(calls[1]);
      },
      { client, data: undefined },
      metrics,
      () => metrics.counter("exceptions").add(),
    );
    const cpuAfter = await cpuMs(pids);
    const calls = commandDelta(callsBefore, await commands.snapshot());
    const elapsedS = (performance.now() - start) / 1000;
    const s = metrics.summaries();
    const n = s.http_reqs?.count ?? 0;
    const d = s.http_req_duration ?? {};
    // The commands Redis ran with no load in this step's time are not this case's.
    const idleCalls = idle.redisCommandsPerS * elapsedS;
    const perRequest = (x: number) => n ? round(Math.max(0, x) / n) : 0;
    return {
      rate,
      p50: round(d.med ?? 0),
      p95: round(d["p(95)"] ?? 0),
      p99: round(d["p(99)"] ?? 0),
      errors: (s.http_req_failed?.true ?? 0) + (s.exceptions?.count ?? 0),
      dropped: s.dropped_iterations?.count ?? 0,
      dbStatements: dbStatements ? round(dbStatements / n) : kase.knownStatements ?? 0,
      redisRequests: n ? round(((await redisRequests()) - redisBefore) / n) : 0,
      redisCommands: perRequest(totalCalls(calls) - idleCalls),
      redisCommandsByName: Object.fromEntries(
        Object.entries(calls).map(([k, v]) => [
          k,
          perRequest(v - (idle.redisCommandsByName[k] ?? 0) * elapsedS),
        ]).filter(([, v]) => (v as number) > 0),
      ),
      cpuMs: cpuBefore === null || cpuAfter === null ? null : perRequest(cpuAfter - cpuBefore),
      providerCalls: n
        ? round((openai.chatCalls() + openai.transcriptionCalls() - providerBefore) / n)
        : 0,
    };
  };

  const report: Record<
    string,
    { maxRate: number; atMax: Measured | null; common: Measured; steps: Measured[] }
  > = {};
  for (const kase of cases) {
    log(`${kase.name}: warming up`);
    await measure(kase, 20, 2);
    const common = await measure(kase, commonRate, stepS);
    log(`${kase.name} @ ${commonRate}/s: ${JSON.stringify(common)}`);
    const steps: Measured[] = [];
    let best: Measured | null = null;
    for (const rate of rates) {
      const m = await measure(kase, rate, stepS);
      steps.push(m);
      log(`${kase.name} @ ${rate}/s: p95 ${m.p95} ms, errors ${m.errors}, dropped ${m.dropped}`);
      if (m.p95 >= kase.targetMs || m.errors > 0 || m.dropped > 0) break;
      best = m;
    }
    report[kase.name] = { maxRate: best?.rate ?? 0, atMax: best, common, steps };
  }

  const machine = {
    cpus: navigator.hardwareConcurrency,
    memoryGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    deno: Deno.version.deno,
    cpuModel: (await Deno.readTextFile("/proc/cpuinfo").catch(() =>
      ""
    )).match(/model name\s*:\s*(.+)/)?.[1] ?? "unknown",
    postgres: await (async () => {
      const sql = postgres(dbUrl, { max: 1 });
      const [{ version }] = await sql`select version()`;
      await sql.end();
      return version.split(",")[0];
    })(),
  };
  // A subset run (BENCH_CASES) updates its cases in the last full report.
  const previous = only
    ? JSON.parse(await Deno.readTextFile(`${repoRoot}/bench/results.json`).catch(() => "{}"))
    : {};
  const results = {
    date: new Date().toISOString(),
    machine,
    seeded,
    commonRate,
    stepS,
    // A subset run's idle baseline covers its own servers: keep the others' from before.
    idle: { ...idle, cpuMsPerS: { ...previous.idle?.cpuMsPerS, ...idle.cpuMsPerS } },
    cases: { ...previous.cases, ...report },
    coldStart: coldStart ?? previous.coldStart,
  };
  await Deno.mkdir(`${repoRoot}/bench`, { recursive: true });
  await Deno.writeTextFile(
    `${repoRoot}/bench/results.json`,
    JSON.stringify(results, null, 2) + "\n",
  );
  const markdown = toMarkdown(results);
  await Deno.writeTextFile(`${repoRoot}/bench/results.md`, markdown);
  console.log(markdown);
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup().catch((err) => console.error(err));
}

function toMarkdown(r: {
  date: string;
  machine: Record<string, unknown>;
  seeded: unknown;
  commonRate: number;
  idle?: Idle;
  cases: Record<string, { maxRate: number; atMax?: Measured | null; common: Measured }>;
  coldStart?: ColdRow[];
}): string {
  const floor = r.cases["floor"];
  const before = Object.entries(r.cases).find(([n]) => n.startsWith("before"))?.[1];
  const ratio = (a: number, b: number | undefined) => b ? `${(a / b).toFixed(2)}×` : "–";
  const lines = [
    `Measured ${
      r.date.slice(0, 10)
    } on ${r.machine.cpus} cores (${r.machine.cpuModel}), ${r.machine.memoryGiB} GiB, ${r.machine.os}, Deno ${r.machine.deno}, ${r.machine.postgres}; server, Redis, Postgres and load generator on the same machine.`,
    `Data: ${JSON.stringify(r.seeded)}.`,
    "",
    `| case | max rate held (p95 < target, no errors) | p50 / p95 / p99 at ${r.commonRate}/s | CPU ms / req | Redis commands / req | Redis HTTP / req | DB statements / req | provider calls / req | max rate vs floor | max rate vs before |`,
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  const dash = (x: number | null | undefined) => x ?? "–";
  // Per-request costs from the common-rate step; where that step had errors (e.g. recall, whose
  // capacity is below it), from the highest rate held instead, marked with its rate.
  const costStep = (c: { atMax?: Measured | null; common: Measured }) =>
    c.common.errors > 0 && c.atMax ? c.atMax : c.common;
  let marked = false;
  for (const [name, c] of Object.entries(r.cases)) {
    const m = c.common;
    const k = costStep(c);
    const at = k === m ? "" : ` (at ${k.rate}/s)`;
    if (at) marked = true;
    const cost = (x: number | null | undefined) => `${dash(x)}${x == null ? "" : at}`;
    lines.push(
      `| ${name} | ${c.maxRate}/s | ${m.p50} / ${m.p95} / ${m.p99} ms | ${cost(k.cpuMs)} | ${
        cost(k.redisCommands)
      } | ${cost(k.redisRequests)} | ${cost(k.dbStatements)} | ${cost(k.providerCalls)} | ${
        ratio(c.maxRate, floor?.maxRate)
      } | ${ratio(c.maxRate, before?.maxRate)} |`,
    );
  }
  const byName = Object.entries(r.cases)
    .filter(([, c]) => costStep(c).redisCommandsByName)
    .map(([name, c]) => {
      const parts = Object.entries(costStep(c).redisCommandsByName!)
        .sort(([, a], [, b]) => b - a)
        .map(([cmd, n]) => `${cmd} ${n}`);
      return `${name}: ${parts.length ? parts.join(", ") : "none"}`;
    });
  lines.push(
    "",
    `Per request at ${r.commonRate}/s${
      marked ? " (where that step had errors, at the highest rate held, as marked)" : ""
    }. CPU ms: user + system time of the serving process(es) ` +
      "(/proc/<pid>/stat utime + stime; the stack is one process, gateway and functions " +
      "in-process, plus any `WORKERS` children; not the bridge, Redis or Postgres). Redis " +
      "commands: `INFO commandstats` before and after each step (INFO excluded), which counts " +
      "the commands a script runs as Upstash bills them; Redis HTTP: requests the Upstash REST " +
      "bridge received.",
  );
  if (r.idle) {
    const cpu = Object.entries(r.idle.cpuMsPerS).map(([n, v]) => `${n} ${dash(v)}`).join(", ");
    lines.push(
      "",
      `Idle baseline (${r.idle.seconds} s, no load, subtracted from Redis commands): Redis ` +
        `(${r.idle.redis === "own" ? "a redis-server of this run" : "shared REDIS_URL"}) ` +
        `${r.idle.redisCommandsPerS} commands/s; serving processes' CPU ms/s: ${cpu}.`,
    );
  }
  if (byName.length) {
    lines.push(
      "",
      "Redis commands per request by name:",
      "",
      ...byName.map((l) => `- ${l}`),
    );
  }
  if (r.coldStart?.length) lines.push("", coldStartMarkdown(r.coldStart).trimEnd());
  return lines.join("\n") + "\n";
}
