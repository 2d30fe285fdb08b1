/**
 * Cold start (issue 12, goal 5): how long after its process is spawned a function answers its
 * first real request, beside a bare `Deno.serve` hello world spawned the same way.
 *
 * Each run spawns `deno run -A functions/<slug>/index.ts` (or scripts/bench/cold_hello.ts)
 * with the environment a deploy gives it (DATABASE_URL, SUPABASE_JWKS, UPSTASH_* pointing at
 * the bench's bridge, PORT), probes the port with a TCP connect every millisecond until it
 * listens, then sends one real request (a valid token where the route needs one) and stops the
 * clock when the whole answer is read with the expected status. The process is then stopped.
 * Rounds interleave the targets (hello, feed, health, …) so that the machine's noise falls on
 * all of them alike; the first round is not counted: it fills Deno's module and emit caches,
 * as a deploy has its code cached too (a cold isolate, not a cold cache).
 *
 * Reported per target: spawn→listening and spawn→answer, median and p90 of `runs`; and the
 * answer's median over the hello world's median (the goal: ≤ 50 ms).
 *
 * Alone: `deno run -A scripts/bench/cold_start.ts` (or `BENCH_CASES=cold npm run bench` for the
 * same measurement on the bench's seeded database). Alone it makes a small migrated, seeded
 * database on DATABASE_URL's server, a Redis REST bridge process on REDIS_URL and a fake
 * model. Env: COLD_RUNS (15), COLD_TARGETS (comma list of names to run a subset; the hello
 * world always runs), COLD_BASELINE (another checkout, e.g. `git worktree add /tmp/base <commit>`:
 * its functions run too, in the same rounds, for a before/after side by side).
 *
 * @module
 */
import { createDevKeys } from "../dev/dev_auth.ts";
import { freePort, repoRoot } from "../dev/local_services.ts";
import { seededUserId } from "../testing/seed.ts";
import { cpuMs } from "./costs.ts";

/** One thing to cold-start: a script and the first request it must answer. */
export interface ColdTarget {
  name: string;
  /** Script path, relative to the repository root. */
  script: string;
  /** The checkout it runs from (cwd and script); this one when absent. */
  root?: string;
  /** The first request, against `base` (e.g. http://127.0.0.1:1234); `run` makes it unique. */
  request(base: string, run: number): Request;
  /** Expected status of its answer (200). */
  status?: number;
}

/** Median and p90 of a series (ms). */
export interface Spread {
  median: number;
  p90: number;
  min: number;
  max: number;
}

/** A target's figures. */
export interface ColdRow {
  name: string;
  runs: number;
  /** Spawn → the port accepts a connection. */
  listenMs: Spread;
  /** Spawn → the first request's whole answer read. */
  answerMs: Spread;
  /** Listening → that answer read: the first request alone. */
  requestMs: Spread;
  /**
   * CPU time (user + system, all threads) the process spent up to its first answer: less
   * sensitive than wall time to other work on the machine; null where /proc is missing.
   */
  cpuMs: Spread | null;
  /** Answer median over the hello world's answer median (ms); 0 for the hello world itself. */
  overFloorMs: number;
}

/** What the measurement needs around it. */
export interface ColdStartOptions {
  /** Environment of every function (database, Redis bridge, keys, model); PORT is added. */
  env: Record<string, string>;
  /** An access token the functions accept (signed by the key in `env.SUPABASE_JWKS`). */
  token: string;
  /** A user that exists in the database (profiles asks for it). */
  userId: string;
  /** Counted runs per target (a first, uncounted round warms the caches). */
  runs: number;
  /** Names of the functions to run (all when absent); the hello world always runs. */
  only?: string[];
  /**
   * Another checkout (e.g. a worktree of the commit before a change): each function also runs
   * from there, as "<name> @ baseline", in the same rounds.
   */
  baselineRoot?: string;
  log?: (msg: string) => void;
}

const hello = "bare Deno.serve (hello world)";

/** The targets: the hello world, then the functions of goal 5. */
export function coldTargets(token: string, userId: string): ColdTarget[] {
  const bearer = { authorization: `Bearer ${token}` };
  return [
    {
      name: hello,
      script: "scripts/bench/cold_hello.ts",
      request: (base) => new Request(`${base}/`),
    },
    {
      name: "health",
      script: "functions/health/index.ts",
      request: (base) => new Request(`${base}/health`),
    },
    {
      name: "feed",
      script: "functions/feed/index.ts",
      request: (base) => new Request(`${base}/feed?limit=20`, { headers: bearer }),
    },
    {
      name: "profiles",
      script: "functions/profiles/index.ts",
      request: (base) => new Request(`${base}/profiles?ids=${userId}`, { headers: bearer }),
    },
    {
      name: "recall-resolve",
      script: "functions/recall-resolve/index.ts",
      // A new text each run: a cold isolate computing an answer (the model is the fake),
      // not one replayed from Redis.
      request: (base, run) =>
        new Request(`${base}/recall-resolve`, {
          method: "POST",
          headers: { ...bearer, "content-type": "application/json" },
          body: JSON.stringify({
            text: `the song that goes na na na, cold start ${run} ${crypto.randomUUID()}`,
          }),
        }),
    },
  ];
}

/** Nearest-rank percentile of sorted `xs`. */
function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

/** Median, p90, min and max of `xs` (rounded to 0.1 ms). */
export function spread(xs: number[]): Spread {
  const sorted = [...xs].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 10) / 10;
  return {
    median: r(percentile(sorted, 0.5)),
    p90: r(percentile(sorted, 0.9)),
    min: r(sorted[0]),
    max: r(sorted[sorted.length - 1]),
  };
}

/** Spawns `target` once; its spawn→listen and spawn→answer times (ms). */
async function coldRun(
  target: ColdTarget,
  env: Record<string, string>,
  run: number,
): Promise<{ listenMs: number; answerMs: number; cpuMs: number | null }> {
  const port = freePort();
  const start = performance.now();
  const root = target.root ?? repoRoot;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${root}/${target.script}`],
    cwd: root,
    env: { ...env, PORT: String(port) },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let exited = false;
  child.status.then(() => exited = true);
  try {
    const deadline = start + 30_000;
    let listenMs = 0;
    for (;;) {
      if (exited) throw new Error(`${target.script} exited before listening:\n${await stderr}`);
      if (performance.now() > deadline) throw new Error(`${target.script}: not listening in 30 s`);
      try {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        listenMs = performance.now() - start;
        conn.close();
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 1));
      }
    }
    const res = await fetch(target.request(`http://127.0.0.1:${port}`, run));
    const body = await res.text();
    const answerMs = performance.now() - start;
    const cpu = await cpuMs([child.pid]);
    if (res.status !== (target.status ?? 200)) {
      throw new Error(`${target.script}: first answer ${res.status}: ${body.slice(0, 500)}`);
    }
    return { listenMs, answerMs, cpuMs: cpu };
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    await stderr;
  }
}

/**
 * Runs one uncounted warm-up round, then `runs` rounds over the targets; a row per target
 * with the hello world first.
 */
export async function measureColdStart(options: ColdStartOptions): Promise<ColdRow[]> {
  const log = options.log ?? (() => {});
  const chosen = coldTargets(options.token, options.userId).filter((t) =>
    t.name === hello || !options.only || options.only.includes(t.name)
  );
  const targets = options.baselineRoot
    ? chosen.flatMap((t) =>
      t.name === hello
        ? [t]
        : [{ ...t, name: `${t.name} @ baseline`, root: options.baselineRoot }, t]
    )
    : chosen;
  const times = new Map(
    targets.map((t) => [t.name, {
      listen: [] as number[],
      answer: [] as number[],
      request: [] as number[],
      cpu: [] as (number | null)[],
    }]),
  );
  for (let round = 0; round <= options.runs; round++) {
    for (const target of targets) {
      const measured = await coldRun(target, options.env, round);
      if (round === 0) continue; // fills the module and emit caches
      const series = times.get(target.name)!;
      series.listen.push(measured.listenMs);
      series.answer.push(measured.answerMs);
      series.request.push(measured.answerMs - measured.listenMs);
      series.cpu.push(measured.cpuMs);
    }
    if (round) log(`cold start: round ${round}/${options.runs}`);
  }
  const floor = spread(times.get(hello)!.answer).median;
  return targets.map((t) => {
    const { listen, answer, request, cpu } = times.get(t.name)!;
    const answerMs = spread(answer);
    return {
      name: t.name,
      runs: answer.length,
      listenMs: spread(listen),
      answerMs,
      requestMs: spread(request),
      cpuMs: cpu.every((x) => x !== null) ? spread(cpu as number[]) : null,
      overFloorMs: t.name === hello ? 0 : Math.round((answerMs.median - floor) * 10) / 10,
    };
  });
}

/** The markdown table of `rows`. */
export function coldStartMarkdown(rows: ColdRow[]): string {
  const lines = [
    "| cold start | spawn → listening, median / p90 | listening → first answer, median / p90 | spawn → first answer, median / p90 | first answer over the bare Deno.serve (median) | CPU ms to first answer, median / p90 |",
    "| --- | --- | --- | --- | --- | --- |",
    ...rows.map((r) =>
      `| ${r.name} | ${r.listenMs.median} / ${r.listenMs.p90} ms | ${r.requestMs.median} / ${r.requestMs.p90} ms | ${r.answerMs.median} / ${r.answerMs.p90} ms | ${
        r.name === hello ? "–" : `+${r.overFloorMs} ms`
      } | ${r.cpuMs ? `${r.cpuMs.median} / ${r.cpuMs.p90}` : "–"} |`
    ),
    "",
    `${rows[0]?.runs ?? 0} runs each, targets interleaved, after one uncounted round that fills ` +
    "Deno's module and emit caches (a deploy has its code cached too). Each run spawns " +
    "`deno run -A <script>` with the function's environment, probes its port every ms, then " +
    "sends one real request (health: GET /health; feed: GET /feed?limit=20, profiles: " +
    "GET /profiles?ids=<id>, recall-resolve: POST a new text to the fake model, each with a " +
    "valid token) and stops the clock when its answer is read. CPU: user + system time of " +
    "the process (all threads, /proc/<pid>/stat) when its first answer is read.",
  ];
  return lines.join("\n") + "\n";
}

/** Env and a token for the functions on `databaseUrl`, the bridge and the model. */
export async function coldStartEnv(options: {
  databaseUrl: string;
  upstash: { url: string; token: string };
  openaiBaseUrl: string;
  redisPrefix: string;
}): Promise<{ env: Record<string, string>; token: string; userId: string }> {
  const keys = await createDevKeys();
  const userId = seededUserId(1);
  return {
    env: {
      DATABASE_URL: options.databaseUrl,
      SUPABASE_JWKS: JSON.stringify(keys.jwks),
      UPSTASH_REDIS_REST_URL: options.upstash.url,
      UPSTASH_REDIS_REST_TOKEN: options.upstash.token,
      REDIS_PREFIX: options.redisPrefix,
      OPENAI_API_KEY: "bench",
      OPENAI_BASE_URL: options.openaiBaseUrl,
      LOG_REQUESTS: "false",
      // Many runs of one user: the limits are not what is measured.
      FEED_RATE_LIMIT_PER_MIN: "100000000",
      RECALL_RATE_LIMIT_PER_MIN: "100000000",
      RECALL_RATE_LIMIT_PER_HOUR: "100000000",
      ANON_READ_RATE_LIMIT_PER_MIN: "100000000",
      PATH: Deno.env.get("PATH") ?? "",
      HOME: Deno.env.get("HOME") ?? "",
      ...(Deno.env.get("DENO_DIR") ? { DENO_DIR: Deno.env.get("DENO_DIR")! } : {}),
    },
    token: await keys.mint(userId, { ttlS: 3600 }),
    userId,
  };
}

/** The fake model's answers for recall-resolve. */
export const coldModelAnswer = (req: { schemaName?: string }) =>
  req.schemaName === "recall_candidates" || req.schemaName === "candidates"
    ? {
      candidates: [{
        title: "Invented Song",
        artist: "Made Up Band",
        confidence: 0.6,
        reason: "cold start",
      }],
    }
    : {
      lyrics_fragment: "na na na",
      title_hint: null,
      artist_hint: null,
      description: "cold start",
      era: null,
    };

if (import.meta.main) {
  const postgres = (await import("postgres")).default;
  const { testDatabase } = await import("../testing/test_db.ts");
  const { seed } = await import("../testing/seed.ts");
  const { spawnServer } = await import("../dev/stack.ts");
  const { startOpenAIFake } = await import("../testing/fakes/openai.ts");
  const cleanups: (() => Promise<unknown>)[] = [];
  const log = (msg: string) => console.log(`[cold] ${msg}`);
  try {
    const db = await testDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    const seedSql = postgres(db.url, { max: 2, onnotice: () => {} });
    await seed(seedSql, { users: 100, posts: 2000, follows: 20, songs: 500 });
    await seedSql.end();
    const bridgeToken = crypto.randomUUID();
    const bridge = await spawnServer(`${repoRoot}/scripts/dev/redis_bridge.ts`, freePort(), {
      REDIS_URL: Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379",
      UPSTASH_REDIS_REST_TOKEN: bridgeToken,
    }, (line) => line.startsWith("http://"));
    cleanups.push(() => bridge.stop());
    const openai = startOpenAIFake({ chat: coldModelAnswer });
    cleanups.push(() => openai.close());
    const { env, token, userId } = await coldStartEnv({
      databaseUrl: db.url,
      upstash: { url: bridge.url, token: bridgeToken },
      openaiBaseUrl: openai.baseUrl,
      redisPrefix: `cold:${crypto.randomUUID().slice(0, 8)}:`,
    });
    const rows = await measureColdStart({
      env,
      token,
      userId,
      runs: Number(Deno.env.get("COLD_RUNS") ?? 15),
      only: Deno.env.get("COLD_TARGETS")?.split(","),
      baselineRoot: Deno.env.get("COLD_BASELINE"),
      log,
    });
    console.log(coldStartMarkdown(rows));
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch((err) => console.error(err));
  }
}
