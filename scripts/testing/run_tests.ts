/**
 * `npm test`: every test against real Postgres and Redis. Uses DATABASE_URL / REDIS_URL when
 * set, else starts its own (embedded Postgres; redis-server from PATH). Builds one migrated
 * template database that each test file copies, runs `deno test --parallel` (test files at
 * once, `DENO_JOBS` of them), then the load smoke (full run only), and tears everything down.
 * It prints only the failures, in full, and the closing line `tests: N passed, N failed`,
 * where a suite's cases (steps, test_http.ts) count one by one (TEST_VERBOSE=1: everything
 * `deno test` prints).
 *
 * @module
 */
import {
  freePort,
  type LocalService,
  repoRoot,
  startEmbeddedPostgres,
  startRedisServer,
} from "../dev/local_services.ts";
import { createDatabase, databaseUrl, dropDatabase } from "../dev/db.ts";
import { handleSummary, runScenario } from "../../loadtest/lib/runner.ts";
import { scenario as smoke } from "../../loadtest/smoke.ts";
import { startStack } from "../dev/stack.ts";
import { buildTemplate, dropTemplate } from "./test_db.ts";
import { deleteKeys, testRedis } from "./test_redis.ts";
import { isNoise, TestOutputFilter } from "./test_output.ts";
import { TextLineStream } from "../dev/text_lines.ts";

const verbose = Deno.env.get("TEST_VERBOSE") === "1";
const info = (msg: string) => verbose && console.log(msg);

/** Prints what the smoke found (its table when it failed, or with TEST_VERBOSE); true: passed. */
type SmokeReport = () => Promise<boolean>;

/**
 * Starts the stack on a fresh database and runs the smoke scenario. It runs while the test
 * files do (it checks answers, not latencies), so its report is kept for after their output.
 * The database and the Redis keys are removed whatever happens.
 */
async function runSmoke(adminUrl: string, redisUrl: string): Promise<SmokeReport> {
  const name = `rockout_smoke_${crypto.randomUUID().slice(0, 8)}`;
  await createDatabase(adminUrl, name);
  try {
    return await smokeOnStack(databaseUrl(adminUrl, name), redisUrl, `smoke:${name}:`);
  } finally {
    await dropDatabase(adminUrl, name).catch((err) => console.error(err));
    const redis = await testRedis(redisUrl);
    await deleteKeys(redis.redis, `smoke:${name}:*`).catch((err) => console.error(err));
    await redis.close();
  }
}

/** The stack on `databaseUrl` (its Redis keys under `redisPrefix`), and the smoke against it. */
async function smokeOnStack(
  databaseUrl: string,
  redisUrl: string,
  redisPrefix: string,
): Promise<SmokeReport> {
  const secretKey = `sb_secret_smoke_${crypto.randomUUID().replaceAll("-", "")}`;
  Deno.env.set("SMOKE_SECRET_KEY", secretKey);
  const stack = await startStack(freePort(), {
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: secretKey }),
    DATABASE_URL: databaseUrl,
    REDIS_URL: redisUrl,
    REDIS_PREFIX: redisPrefix,
    SEED_USERS: "60",
    SEED_POSTS: "600",
    // The smoke runs beside the test files, on a CPU they keep saturated: recall's limits
    // fail closed (503) when Redis can't decide within 50 ms, which a starved event loop
    // can't promise here. Deciding in time under saturation is what
    // rate_limits_saturated_test proves; the smoke checks that every endpoint answers.
    RATE_LIMIT_DECISION_MS: "2000",
    // Not .local/stack.json: that one belongs to the developer's own npm start.
    STACK_FILE: `${await Deno.makeTempDir({ prefix: "rockout-smoke-stack-" })}/stack.json`,
  });
  try {
    info(`[test] smoke: stack up at ${stack.url}`);
    const result = await runScenario(smoke, stack.url);
    return async () => {
      if (result.ok && !verbose) return true;
      // Its table only when it failed (or asked for).
      const dir = await Deno.makeTempDir({ prefix: "rockout-smoke-" });
      if (!result.ok) console.log("\nin the load smoke (loadtest/smoke.ts):");
      return (await handleSummary(result, dir)) === 0;
    };
  } catch (err) {
    const output = stack.output.slice(-20).join("\n");
    return () => {
      console.error("[test] smoke failed:", err, output);
      return Promise.resolve(false);
    };
  } finally {
    await stack.stop();
  }
}

/**
 * Every test file (as `deno test` finds them: `*_test.ts`, outside node_modules and hidden
 * directories), those likely to take longest first, so that none is left running alone at the
 * end: `deno test --parallel` takes directories in an order of its own, but a directory's
 * files in the order given. Files that set up a database (a copy of the template, with
 * servers and seeds) are the slow ones, the larger the slower; unit tests take a second or less.
 */
async function testFiles(): Promise<string[]> {
  const files: { path: string; db: boolean; size: number }[] = [];
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(`${repoRoot}/${dir}`)) {
      const path = dir ? `${dir}/${entry.name}` : entry.name;
      if (entry.isDirectory && entry.name !== "node_modules" && !entry.name.startsWith(".")) {
        await walk(path);
      } else if (entry.isFile && entry.name.endsWith("_test.ts")) {
        const text = await Deno.readTextFile(`${repoRoot}/${path}`);
        const db = /\b(functionTestEnv|testDatabase|startStack)\(/.test(text);
        files.push({ path, db, size: text.length });
      }
    }
  };
  await walk("");
  files.sort((a, b) => Number(b.db) - Number(a.db) || b.size - a.size);
  return files.map((f) => f.path);
}

/**
 * Test files run at once: DENO_JOBS, else 6. Most of a test's time is spent waiting (on
 * Postgres, Redis, timers), so more files than cores keep 2 cores busy; each file holds about
 * ten Postgres connections, and the server allows 100. At least 2: with one, `deno test`
 * reports in its serial format, which TestOutputFilter doesn't read.
 */
function testJobs(): number {
  return Math.max(2, Number(Deno.env.get("DENO_JOBS")) || 6);
}

/** What one `deno test` process did. */
interface TestRun {
  passed: number;
  failed: number;
  status: Deno.CommandStatus;
}

/** Runs `files` in one `deno test --parallel` (`jobs` at once), printing only failures. */
async function runDenoTest(
  files: string[],
  jobs: number,
  adminUrl: string,
  template: string,
  redisUrl: string,
): Promise<TestRun> {
  info(`[test] deno test --parallel (${jobs} at once) ${files.join(" ")}`);
  const child = new Deno.Command(Deno.execPath(), {
    // --parallel: test files share nothing but the servers (each has its own database and
    // Redis prefix, and none writes the process environment). --no-check: CI type-checks
    // first (.ci/run runs `npm run check`, then `npm test`), so it is done once, not twice.
    args: ["test", "-A", "--parallel", "--no-check", ...files],
    cwd: repoRoot,
    env: {
      TEST_ADMIN_DATABASE_URL: adminUrl,
      TEST_TEMPLATE_DB: template,
      TEST_REDIS_URL: redisUrl,
      NO_COLOR: "1",
      DENO_JOBS: String(jobs),
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const filter = new TestOutputFilter();
  const lines = (stream: ReadableStream<Uint8Array>) =>
    stream.pipeThrough(new TextDecoderStream()).pipeThrough(new TextLineStream());
  const errors = (async () => {
    for await (const line of lines(child.stderr)) {
      if (verbose || !isNoise(line)) console.error(line);
    }
  })();
  for await (const line of lines(child.stdout)) {
    const shown = filter.push(line);
    if (verbose) console.log(line);
    else for (const l of shown) console.log(l);
  }
  await errors;
  return { passed: filter.passed, failed: filter.failed, status: await child.status };
}

const env = Deno.env;
const stops: (() => Promise<void>)[] = [];
let exitCode = 1;
try {
  let adminUrl = env.get("DATABASE_URL");
  if (!adminUrl) {
    info("[test] DATABASE_URL not set: starting embedded Postgres");
    const dir = await Deno.makeTempDir({ prefix: "rockout-test-pg-" });
    const pg: LocalService = await startEmbeddedPostgres(dir, freePort());
    stops.push(async () => {
      await pg.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    });
    adminUrl = pg.url;
  }
  let redisUrl = env.get("REDIS_URL");
  if (!redisUrl) {
    info("[test] REDIS_URL not set: starting redis-server");
    const redis = await startRedisServer(freePort());
    stops.push(redis.stop);
    redisUrl = redis.url;
  }
  const template = await buildTemplate(adminUrl);
  stops.push(() => dropTemplate(adminUrl!, template));
  info(`[test] template database ${template} ready`);

  // The load smoke (full run only): every endpoint once against a freshly started stack, at
  // the same time as the test files. Awaited before the servers stop, whatever happens.
  const smoke = Deno.args.length
    ? null
    : runSmoke(adminUrl, redisUrl).catch((err): SmokeReport => () => {
      console.error("[test] smoke failed:", err);
      return Promise.resolve(false);
    });
  if (smoke) stops.push(() => smoke.then(() => {}));
  const files = Deno.args.length ? Deno.args : await testFiles();
  // Two `deno test` processes, started together: `deno test --parallel` takes directories
  // deepest first, so files directly under a top-level folder (supabase/, functions/: the
  // migration plans, the cross-function limit floods, some of the slowest) would start only
  // once everything else is done and run on alone. Their own lane starts them at once.
  const shallow = files.filter((f) => f.split("/").length <= 2);
  const lanes = Deno.args.length || !shallow.length ? [{ files, jobs: testJobs() }] : [
    { files: shallow, jobs: 2 },
    { files: files.filter((f) => !shallow.includes(f)), jobs: Math.max(2, testJobs() - 2) },
  ];
  const runs = lanes.map((lane) =>
    runDenoTest(lane.files, lane.jobs, adminUrl!, template, redisUrl!)
  );
  const results = await Promise.all(runs);
  // The closing line CI reads: steps and tests without steps, as the filters counted them (a
  // run that failed before any test, e.g. a module that doesn't load, counts as one failure).
  let passed = 0;
  let failed = 0;
  exitCode = 0;
  for (const r of results) {
    passed += r.passed;
    failed += r.failed || (r.status.success ? 0 : 1);
    exitCode ||= r.status.code;
  }
  if (smoke) {
    if (await (await smoke)()) passed++;
    else {
      failed++;
      exitCode ||= 99;
    }
  }
  console.log(`\ntests: ${passed} passed, ${failed} failed`);
} catch (err) {
  console.error("[test] failed:", err);
} finally {
  for (const stop of stops.reverse()) await stop().catch((err) => console.error(err));
}
Deno.exit(exitCode);
