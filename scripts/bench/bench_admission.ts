/**
 * `deno run -A scripts/bench/bench_admission.ts`: admission under abuse and overload, against one
 * serving process (`scripts/dev/serve.ts`, as `npm start` runs it) on a seeded test database,
 * real Redis behind the bridge, loopback only.
 *
 * 1. slow clients: feed reads by 10 users (each a read every 100 ms), first alone, then for 8 s
 *    while 300 connections from one IP trickle a `PATCH /profiles/me` body a byte every 500 ms
 *    (reconnecting after each answer: 429 past the sender's in-flight cap, 408 at the deadline).
 *    Target: ≥ 99% of reads succeed, p95 < 200 ms.
 * 2. overload: the capacity of `GET /feed` (closed loop, 32 clients, best of 3 × 3 s), then twice that rate
 *    offered open-loop for BENCH_OVERLOAD_S (10) seconds, to the adaptive limit and then, for
 *    comparison, to a fixed limit of 256 (admission before). Target: admitted requests p95
 *    < 250 ms; the excess gets fast 503s with Retry-After. Each phase reports the serving
 *    process's CPU share and the machine's load average: on a shared two-core machine the
 *    figures move with whatever else runs.
 *
 * Env: DATABASE_URL, REDIS_URL (as for `npm test`).
 *
 * @module
 */
import { Redis } from "@upstash/redis";
import { DEMO_USER_ID, seed, seededUserId } from "../testing/seed.ts";
import { freePort } from "../dev/local_services.ts";
import { spawnServer } from "../dev/stack.ts";
import { functionTestEnv } from "../testing/test_env.ts";
import { deleteKeys, testRedisUrl } from "../testing/test_redis.ts";
import { definedOnly, runVegeta, vegetaBin } from "./vegeta.ts";

const overloadS = Number(Deno.env.get("BENCH_OVERLOAD_S") ?? 10);
const env = await functionTestEnv({
  env: {
    FEED_RATE_LIMIT_PER_MIN: "1000000",
    PROFILE_SEARCH_RATE_LIMIT_PER_MIN: "1000000",
    SUPABASE_SECRET_KEYS: JSON.stringify({ bench: "sb_secret_bench_admission" }),
  },
});
await seed(env.db.sql, { users: 300, posts: 3000 });
// The Redis bridge in a process of its own: the load generator must not slow it down.
const bridgeToken = crypto.randomUUID();
const bridge = await spawnServer("scripts/dev/redis_bridge.ts", freePort(), {
  UPSTASH_REDIS_REST_TOKEN: bridgeToken,
  REDIS_URL: testRedisUrl(),
}, (l) => l.startsWith("http"));
const port = freePort();
const base = `http://127.0.0.1:${port}`;
/** One serving process (as `npm start` runs), with `extra` env on top. */
const startServer = (extra: Record<string, string> = {}) =>
  spawnServer("scripts/dev/serve.ts", port, {
    ...definedOnly(env.env), // the test environment's database, keys, prefix and settings
    UPSTASH_REDIS_REST_URL: bridge.url,
    UPSTASH_REDIS_REST_TOKEN: bridgeToken,
    ...extra,
  }, (l) => l === "ready");
// Its access log gives the server's own view of each feed read (the first phases only: the
// output kept is bounded).
let server = await startServer({ LOG_REQUESTS: "true" });
const encoder = new TextEncoder();
const tokens = await Promise.all(
  Array.from({ length: 200 }, (_, i) => env.keys.mint(seededUserId(i + 5))),
);

/** `env` without its unset variables (a child process's environment holds strings only). */
function p(sorted: number[], q: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] : NaN;
}
const round = (n: number) => Math.round(n * 10) / 10;

async function feed(token: string): Promise<{ status: number; ms: number; retryAfter: boolean }> {
  const t0 = performance.now();
  try {
    const res = await fetch(`${base}/functions/v1/feed?kind=following`, {
      headers: { authorization: `Bearer ${token}` },
    });
    await res.body?.cancel();
    return {
      status: res.status,
      ms: performance.now() - t0,
      retryAfter: res.headers.has("retry-after"),
    };
  } catch {
    return { status: 0, ms: performance.now() - t0, retryAfter: false };
  }
}

/** 10 users reading every 100 ms for `ms`. */
async function readers(ms: number) {
  const logFrom = server.output.length;
  const results: { status: number; ms: number }[] = [];
  const end = performance.now() + ms;
  await Promise.all(
    tokens.slice(0, 10).map(async (token) => {
      while (performance.now() < end) {
        results.push(await feed(token));
        await new Promise((r) => setTimeout(r, 100));
      }
    }),
  );
  const sorted = results.map((r) => r.ms).sort((a, b) => a - b);
  const ok = results.filter((r) => r.status === 200).length;
  const serverMs = server.output.slice(logFrom).flatMap((line) => {
    try {
      const entry = JSON.parse(line);
      return entry.msg === "request" && entry.function === "feed" ? [entry.ms as number] : [];
    } catch {
      return [];
    }
  }).sort((a, b) => a - b);
  return {
    reads: results.length,
    success: round((100 * ok) / results.length),
    p95: round(p(sorted, 0.95)),
    server_side_p95: round(p(serverMs, 0.95)),
  };
}

async function writeAll(conn: Deno.Conn, data: Uint8Array) {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}

/**
 * 300 connections trickling a body a byte every 500 ms (at most 64 bytes each), each opening a
 * new one after its answer (a second after a 429, as its Retry-After says) until `done()`.
 */
function slowClients(token: string, done: () => boolean): Promise<string[]> {
  const head = encoder.encode(
    `PATCH /functions/v1/profiles/me HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\n` +
      "content-type: application/json\r\ncontent-length: 64\r\n\r\n",
  );
  const answers: string[] = [];
  const once = async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await writeAll(conn, head);
      let answer = "";
      const reading = (async () => {
        const buf = new Uint8Array(512);
        const n = await conn.read(buf).catch(() => null);
        answer = n ? new TextDecoder().decode(buf.subarray(0, n)).split("\r\n")[0] : "closed";
      })();
      for (let i = 0; i < 64 && !answer; i++) {
        await writeAll(conn, encoder.encode(" ")).catch(() => {});
        await new Promise((r) => setTimeout(r, 500));
      }
      await reading;
      return answer;
    } finally {
      conn.close();
    }
  };
  return Promise.all(Array.from({ length: 300 }, async () => {
    do {
      const answer = await once();
      answers.push(answer);
      if (answer.includes(" 429 ")) await new Promise((r) => setTimeout(r, 1000));
    } while (!done());
  })).then(() => answers);
}

/** CPU time the serving process used so far (ms), from /proc (Linux). */
function serverCpuMs(): number {
  try {
    const fields = Deno.readTextFileSync(`/proc/${server.pid}/stat`).split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10; // utime + stime, in 10 ms ticks
  } catch {
    return NaN;
  }
}

/** Runs `phase`, adding the server's CPU share over it. */
async function measured<T extends object>(phase: () => Promise<T>) {
  const cpu0 = serverCpuMs();
  const t0 = performance.now();
  const result = await phase();
  const cpu = serverCpuMs() - cpu0;
  return { ...result, server_cpu_pct: Math.round((100 * cpu) / (performance.now() - t0)) };
}

/** `rate` requests/s offered open loop for `overloadS`: they start on schedule, whatever the answers do. */
async function overload(rate: number) {
  const results: { status: number; ms: number; retryAfter: boolean }[] = [];
  const pending: Promise<void>[] = [];
  // The isolate's adaptive limit, read from its metrics every 500 ms.
  const limits: number[] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const text = await fetch(`${base}/functions/v1/health/metrics`, {
        headers: { apikey: "sb_secret_bench_admission" },
      }).then((r) => r.text()).catch(() => "");
      const match = text.match(/^admission_limit(?:\{[^}]*\})? (\d+)/m);
      if (match) limits.push(Number(match[1]));
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  const start = performance.now();
  for (let i = 0; i < rate * overloadS; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    pending.push(feed(tokens[i % tokens.length]).then((r) => void results.push(r)));
  }
  await Promise.all(pending);
  sampling = false;
  await sampler;
  const admitted = results.filter((r) => r.status === 200).map((r) => r.ms).sort((a, b) => a - b);
  const shed = results.filter((r) => r.status === 503);
  const shedMs = shed.map((r) => r.ms).sort((a, b) => a - b);
  return {
    offered_rps: round(rate),
    requests: results.length,
    admitted: admitted.length,
    admitted_p50_ms: round(p(admitted, 0.5)),
    admitted_p95_ms: round(p(admitted, 0.95)),
    shed_503: shed.length,
    shed_with_retry_after: shed.filter((r) => r.retryAfter).length,
    shed_p95_ms: round(p(shedMs, 0.95)),
    other: results.length - admitted.length - shed.length,
    admission_limit_samples: limits,
  };
}

/**
 * The same open-loop overload from an outside generator, vegeta (`VEGETA_BIN`, or `vegeta` on
 * PATH; `GOTOOLCHAIN=local go install github.com/tsenart/vegeta/v12@v12.13.0`). At twice the
 * capacity a Deno generator on the same two cores falls behind its own schedule and its
 * timings include its own queueing; vegeta's don't, so its figures are the ones to trust.
 */
async function overloadVegeta(bin: string, rate: number, seconds = overloadS) {
  const targets = tokens.map((t) =>
    JSON.stringify({
      method: "GET",
      url: `${base}/functions/v1/feed?kind=following`,
      header: { authorization: [`Bearer ${t}`] },
    })
  ).join("\n");
  const run = (args: string[], input: Uint8Array) => runVegeta(bin, args, input);
  const results = await run([
    "attack",
    "-format=json",
    `-rate=${Math.round(rate)}/s`,
    `-duration=${seconds}s`,
    "-timeout=30s",
    "-max-workers=4096",
  ], encoder.encode(targets));
  const lines = new TextDecoder().decode(await run(["encode", "--to", "json"], results))
    .split("\n").filter(Boolean).map((l) =>
      JSON.parse(l) as { code: number; latency: number; headers?: Record<string, string[]> }
    );
  const ms = (r: { latency: number }) => r.latency / 1e6;
  const admitted = lines.filter((r) => r.code === 200).map(ms).sort((a, b) => a - b);
  const shed = lines.filter((r) => r.code === 503);
  return {
    generator: "vegeta",
    offered_rps: round(rate),
    requests: lines.length,
    admitted: admitted.length,
    admitted_p50_ms: round(p(admitted, 0.5)),
    admitted_p95_ms: round(p(admitted, 0.95)),
    shed_503: shed.length,
    shed_with_retry_after: shed.filter((r) => r.headers?.["Retry-After"]?.length).length,
    shed_p95_ms: round(p(shed.map(ms).sort((a, b) => a - b), 0.95)),
    other: lines.length - admitted.length - shed.length,
  };
}

/**
 * Capacity as vegeta sees it: the highest of a rising series of rates (3 s each) at which every
 * answer is a 200 with p95 < 50 ms. The generator's own CPU is then part of both the capacity
 * and the 2x overload, as it must be on one machine.
 */
async function capacityVegeta(bin: string) {
  let best = { rps: 0, p95_ms: 0 };
  let stoppedAt = {};
  for (let rate = 100; rate <= 4000; rate += rate < 800 ? 100 : 200) {
    const r = await overloadVegeta(bin, rate, 3);
    if (r.admitted < r.requests || r.admitted_p95_ms >= 50) {
      stoppedAt = r;
      break;
    }
    best = { rps: rate, p95_ms: r.admitted_p95_ms };
  }
  return { generator: "vegeta", ...best, stopped_at: stoppedAt };
}

const report: Record<string, unknown> = {
  load_average_at_start: Deno.loadavg().map(round),
};
try {
  await readers(2000); // warm up
  report.feed_alone = await measured(() => readers(5000));
  let slowDone = false;
  const slow = slowClients(await env.keys.mint(DEMO_USER_ID), () => slowDone);
  await new Promise((r) => setTimeout(r, 500)); // let every connection open
  report.feed_with_300_slow_bodies = await measured(() => readers(8000));
  slowDone = true;
  const answers = await slow;
  report.slow_body_answers = Object.fromEntries(
    [...new Set(answers)].map((a) => [a, answers.filter((b) => b === a).length]),
  );

  // Capacity: closed loop, 32 clients, the best of three 3 s windows (the machine is shared:
  // one window can land on someone else's burst).
  let capacity = 0;
  let closed: number[] = [];
  for (let w = 0; w < 3; w++) {
    const window: number[] = [];
    const capEnd = performance.now() + 3000;
    await Promise.all(Array.from({ length: 32 }, async (_, i) => {
      while (performance.now() < capEnd) {
        const r = await feed(tokens[i % tokens.length]);
        if (r.status === 200) window.push(r.ms);
      }
    }));
    if (window.length / 3 > capacity) [capacity, closed] = [window.length / 3, window];
  }
  closed.sort((a, b) => a - b);
  report.capacity = {
    closed_loop_clients: 32,
    rps: round(capacity),
    p95_ms: round(p(closed, 0.95)),
  };
  // 2x overload, open loop, with the adaptive limit; then the same rate against a fixed limit
  // of 256 (what admission was before), for comparison on the same machine in the same run.
  const vegeta = vegetaBin();
  if (vegeta) {
    report.capacity_vegeta = await capacityVegeta(vegeta);
    capacity = (report.capacity_vegeta as { rps: number }).rps || capacity;
  }
  const overloadBy = (rate: number): Promise<object> =>
    vegeta ? overloadVegeta(vegeta, rate) : overload(rate);
  report.overload_adaptive = await measured(() => overloadBy(2 * capacity));
  await server.stop();
  server = await startServer({ MAX_IN_FLIGHT: "256", MIN_IN_FLIGHT: "256", LOG_REQUESTS: "false" });
  await readers(2000); // warm up
  report.overload_fixed_256 = await measured(() => overloadBy(2 * capacity));
  const metrics = server.output.filter((l) => l.includes("error")).slice(0, 5);
  if (metrics.length) report.server_errors = metrics;
} finally {
  await server.stop();
  const redis = new Redis({ url: bridge.url, token: bridgeToken, enableTelemetry: false });
  await deleteKeys(redis, `${env.redisPrefix}*`);
  await bridge.stop();
  await env.close();
}
console.log(JSON.stringify(report, null, 2));
Deno.exit(0);
