/**
 * `npm test`: every test against real Postgres and Redis. Uses DATABASE_URL / REDIS_URL when
 * set, else starts its own (embedded Postgres; redis-server from PATH). Builds one migrated
 * template database that each test file copies, runs `deno test`, then the load smoke (full
 * run only), and tears everything down. It prints only the failures, in full, and the closing
 * line `tests: N passed, N failed` (TEST_VERBOSE=1: everything `deno test` prints).
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

/** Starts the stack on a fresh database and runs the smoke scenario; true when it passed. */
async function runSmoke(adminUrl: string, redisUrl: string): Promise<boolean> {
  const name = `rockout_smoke_${crypto.randomUUID().slice(0, 8)}`;
  await createDatabase(adminUrl, name);
  const secretKey = `sb_secret_smoke_${crypto.randomUUID().replaceAll("-", "")}`;
  Deno.env.set("SMOKE_SECRET_KEY", secretKey);
  const stack = await startStack(freePort(), {
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: secretKey }),
    DATABASE_URL: databaseUrl(adminUrl, name),
    REDIS_URL: redisUrl,
    REDIS_PREFIX: `smoke:${name}:`,
    SEED_USERS: "60",
    SEED_POSTS: "600",
    // Not .local/stack.json: that one belongs to the developer's own npm start.
    STACK_FILE: `${await Deno.makeTempDir({ prefix: "rockout-smoke-stack-" })}/stack.json`,
  });
  try {
    info(`[test] smoke: stack up at ${stack.url}`);
    const result = await runScenario(smoke, stack.url);
    if (result.ok && !verbose) return true;
    // Its table only when it failed (or asked for).
    const dir = await Deno.makeTempDir({ prefix: "rockout-smoke-" });
    if (!result.ok) console.log("\nin the load smoke (loadtest/smoke.ts):");
    return (await handleSummary(result, dir)) === 0;
  } catch (err) {
    console.error("[test] smoke failed:", err, stack.output.slice(-20).join("\n"));
    return false;
  } finally {
    await stack.stop();
    await dropDatabase(adminUrl, name).catch((err) => console.error(err));
    const redis = await testRedis(redisUrl);
    await deleteKeys(redis.redis, `smoke:${name}:*`).catch((err) => console.error(err));
    await redis.close();
  }
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

  const args = Deno.args.length ? Deno.args : [];
  const child = new Deno.Command(Deno.execPath(), {
    // Not --parallel: test files share the process environment, and each sets its own
    // DATABASE_URL / SUPABASE_JWKS before importing the function under test.
    args: ["test", "-A", ...args],
    cwd: repoRoot,
    env: {
      TEST_ADMIN_DATABASE_URL: adminUrl,
      TEST_TEMPLATE_DB: template,
      TEST_REDIS_URL: redisUrl,
      NO_COLOR: "1",
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let summary = "";
  const filter = new TestOutputFilter();
  const lines = (stream: ReadableStream<Uint8Array>) =>
    stream.pipeThrough(new TextDecoderStream()).pipeThrough(new TextLineStream());
  const errors = (async () => {
    for await (const line of lines(child.stderr)) {
      if (verbose || !isNoise(line)) console.error(line);
    }
  })();
  for await (const line of lines(child.stdout)) {
    if (verbose) console.log(line);
    else for (const shown of filter.push(line)) console.log(shown);
    summary += line + "\n";
    if (summary.length > 8192) summary = summary.slice(-8192);
  }
  await errors;
  const status = await child.status;
  // The closing line CI reads: deno prints "ok | 12 passed | 0 failed"; we restate it plainly.
  const match = summary.match(
    /(\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed/g,
  )?.at(-1)?.match(/(\d+) passed.*\| (\d+) failed/);
  let passed = Number(match?.[1] ?? 0);
  let failed = Number(match?.[2] ?? (status.success ? 0 : 1));
  exitCode = status.code;
  if (!Deno.args.length) {
    // The load smoke: every endpoint once against a freshly started stack.
    const smoke = await runSmoke(adminUrl, redisUrl);
    if (smoke) passed++;
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
