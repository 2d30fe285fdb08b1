/**
 * `npm test`: every test against real Postgres and Redis. Uses DATABASE_URL / REDIS_URL when
 * set, else starts its own (embedded Postgres; redis-server from PATH). Builds one migrated
 * template database that each test file copies, runs `deno test`, then the k6 smoke when
 * k6 is installed, and tears everything down.
 *
 * @module
 */
import {
  freePort,
  type LocalService,
  repoRoot,
  startEmbeddedPostgres,
  startRedisServer,
} from "./local_services.ts";
import { createDatabase, databaseUrl, dropDatabase } from "./db.ts";
import { handleSummary, runScenario } from "../loadtest/lib/runner.ts";
import { scenario as smoke } from "../loadtest/smoke.ts";
import { startStack } from "./stack.ts";
import { buildTemplate, dropTemplate } from "./test_db.ts";
import { deleteKeys, testRedis } from "./test_redis.ts";

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
  });
  try {
    console.log(`[test] smoke: stack up at ${stack.url}`);
    const result = await runScenario(smoke, stack.url);
    const dir = await Deno.makeTempDir({ prefix: "rockout-smoke-" });
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
    console.log("[test] DATABASE_URL not set: starting embedded Postgres");
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
    console.log("[test] REDIS_URL not set: starting redis-server");
    const redis = await startRedisServer(freePort());
    stops.push(redis.stop);
    redisUrl = redis.url;
  }
  const template = await buildTemplate(adminUrl);
  stops.push(() => dropTemplate(adminUrl!, template));
  console.log(`[test] template database ${template} ready`);

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
    stderr: "inherit",
  }).spawn();
  let summary = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    const text = decoder.decode(chunk, { stream: true });
    Deno.stdout.writeSync(chunk);
    summary += text;
    if (summary.length > 8192) summary = summary.slice(-8192);
  }
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
