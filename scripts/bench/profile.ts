/**
 * `npm run profile -- <scenario> [--out DIR]`: a CPU profile of the serving process under a
 * load scenario. Creates a database of its own (seeded by the stack), a Redis key prefix and a
 * fake model, starts the stack (`scripts/dev/start.ts`, one serving process) with this module
 * preloaded as a profiling agent (see `agent` below), runs `loadtest/<scenario>.ts` against
 * it, records a CPU profile of that process (V8's Profiler domain, through `node:inspector`)
 * from the end of a warm-up to the end of the scenario, and writes `<DIR>/<scenario>.cpuprofile`
 * (Chrome DevTools, speedscope) and `<DIR>/<scenario>.md`: the top functions by self time and
 * by total time, printed too. Positions are the TypeScript sources' (source maps from Deno's
 * emit cache, applied in the table and in the file). Everything it created is removed after.
 *
 * Env: DATABASE_URL (admin URL of a server to create the database on; PROFILE_DATABASE_URL
 * to use an existing database as is), REDIS_URL, PROFILE_SECONDS (20: profiled seconds, the
 * scenario's DURATION_S defaults to this plus the warm-up), PROFILE_WARMUP_S (3: load before
 * the profiler starts), PROFILE_INTERVAL_US (1000: sampling interval), PROFILE_TOP (30),
 * PROFILE_USERS / PROFILE_POSTS / PROFILE_SONGS (2000 / 20000 / 2000 seeded: at least the
 * scenario's users), PROFILE_MODEL_MS (300: latency of the fake model), PROFILE_DIR
 * (.local/profiles), and the scenario's own (FEED_RATE, USERS, VUS, …). Threshold failures
 * are reported, not fatal: the profile is the product.
 *
 * @module
 */

/** A V8 CPU profile (`Profiler.stop`'s `profile`, the `.cpuprofile` format). */
export interface CpuProfile {
  nodes: ProfileNode[];
  /** µs */
  startTime: number;
  /** µs */
  endTime: number;
  /** Node id of each sample. */
  samples?: number[];
  /** µs from the previous sample (the first: from `startTime`). */
  timeDeltas?: number[];
}

/** One node of the profile's call tree. */
export interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
  positionTicks?: unknown[];
}

/** Where a node's function is; line and column 0-based. */
export interface CallFrame {
  functionName: string;
  scriptId: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

/** The time of one function (name and position) in a profile. */
export interface FunctionTime {
  name: string;
  url: string;
  /** 1-based; 0 when V8 gives none. */
  line: number;
  /** µs sampled with this function on top of the stack. */
  selfUs: number;
  /** µs sampled with this function anywhere on the stack (once per sample, recursion too). */
  totalUs: number;
}

/** A profile's times by function. */
export interface ProfileTimes {
  /** Every function sampled, except (root) and (idle); by self time, descending. */
  functions: FunctionTime[];
  /** µs covered by the samples. */
  sampledUs: number;
  /** µs of (idle): the process waited for I/O. */
  idleUs: number;
  /** sampledUs − idleUs: what percentages are of. */
  busyUs: number;
  samples: number;
}

const META = new Set(["(root)", "(idle)"]);

/**
 * Self and total time by function from a profile's nodes, samples and timeDeltas. A sample
 * lasts until the next one (the last one until `endTime`). Self time goes to the function on
 * top of the sampled stack; total time to every distinct function on it, once per sample,
 * so recursion is not counted twice. Functions are told apart by name, url, line and column.
 */
export function profileTimes(profile: CpuProfile): ProfileTimes {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const keyOf = (f: CallFrame) => `${f.functionName}\0${f.url}\0${f.lineNumber}\0${f.columnNumber}`;
  const times = new Map<string, FunctionTime>();
  const timeOf = (f: CallFrame) => {
    const key = keyOf(f);
    let t = times.get(key);
    if (!t) {
      t = {
        name: f.functionName || "(anonymous)",
        url: f.url,
        line: f.lineNumber >= 0 ? f.lineNumber + 1 : 0,
        selfUs: 0,
        totalUs: 0,
      };
      times.set(key, t);
    }
    return t;
  };
  // The distinct functions on each sampled node's stack, computed once per node.
  const stacks = new Map<number, FunctionTime[]>();
  const stackOf = (id: number) => {
    let stack = stacks.get(id);
    if (!stack) {
      const seen = new Set<FunctionTime>();
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
        const f = byId.get(at)!.callFrame;
        if (!META.has(f.functionName)) seen.add(timeOf(f));
      }
      stack = [...seen];
      stacks.set(id, stack);
    }
    return stack;
  };

  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  let at = profile.startTime;
  const stamps = samples.map((_, i) => at += deltas[i] ?? 0);
  let sampledUs = 0;
  let idleUs = 0;
  samples.forEach((id, i) => {
    const next = i + 1 < samples.length ? stamps[i + 1] : Math.max(profile.endTime, stamps[i]);
    const us = Math.max(0, next - stamps[i]);
    sampledUs += us;
    const top = byId.get(id)!.callFrame;
    if (top.functionName === "(idle)") {
      idleUs += us;
      return;
    }
    if (!META.has(top.functionName)) timeOf(top).selfUs += us;
    for (const f of stackOf(id)) f.totalUs += us;
  });
  return {
    functions: [...times.values()].sort((a, b) => b.selfUs - a.selfUs || b.totalUs - a.totalUs),
    sampledUs,
    idleUs,
    busyUs: sampledUs - idleUs,
    samples: samples.length,
  };
}

/** A script's url, shorter: repo-relative, `npm:name@version/path` for npm packages. */
export function shortUrl(url: string, root = repoRootPath()): string {
  if (url.startsWith(`file://${root}/`)) return url.slice(`file://${root}/`.length);
  const npm = url.match(/\/registry\.npmjs\.org\/((?:@[^/]+\/)?[^/]+)\/([^/]+)\/(.*)$/);
  if (npm) return `npm:${npm[1]}@${npm[2]}/${npm[3]}`;
  return url.replace(/^file:\/\//, "");
}

function repoRootPath(): string {
  return new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
}

/**
 * Markdown tables of the `top` functions by self time and by total time: function, url:line,
 * self ms, self %, total ms, total % (percentages of the busy time: the samples not idle).
 */
export function profileTable(times: ProfileTimes, top = 30, root = repoRootPath()): string {
  const ms = (us: number) => (us / 1000).toFixed(1);
  const pct = (us: number) => times.busyUs ? `${(100 * us / times.busyUs).toFixed(1)}%` : "–";
  const cell = (s: string) => s.replaceAll("|", "\\|");
  const table = (rows: FunctionTime[]) => [
    "| function | url:line | self ms | self % | total ms | total % |",
    "| --- | --- | ---: | ---: | ---: | ---: |",
    ...rows.slice(0, top).map((f) =>
      `| ${cell(f.name)} | ${f.url ? cell(`${shortUrl(f.url, root)}:${f.line}`) : ""} | ${
        ms(f.selfUs)
      } | ${pct(f.selfUs)} | ${ms(f.totalUs)} | ${pct(f.totalUs)} |`
    ),
  ];
  const byTotal = times.functions.toSorted((a, b) => b.totalUs - a.totalUs || b.selfUs - a.selfUs);
  return [
    `${times.samples} samples over ${ms(times.sampledUs)} ms: busy ${ms(times.busyUs)} ms, ` +
    `idle ${ms(times.idleUs)} ms (${
      times.sampledUs ? (100 * times.idleUs / times.sampledUs).toFixed(1) : "0"
    }%). Percentages are of the busy time.`,
    "",
    `Top ${top} by self time:`,
    "",
    ...table(times.functions),
    "",
    `Top ${top} by total time:`,
    "",
    ...table(byTotal),
  ].join("\n") + "\n";
}

// --- source maps ------------------------------------------------------------------------

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** Per generated line, its segments [generated column, source index, source line, source column]. */
export function decodeMappings(mappings: string): number[][][] {
  const lines: number[][][] = [];
  let source = 0, srcLine = 0, srcCol = 0;
  for (const lineText of mappings.split(";")) {
    const segments: number[][] = [];
    let genCol = 0;
    for (const seg of lineText.split(",")) {
      if (!seg) continue;
      const values: number[] = [];
      let value = 0, shift = 0;
      for (const ch of seg) {
        const digit = B64.indexOf(ch);
        value += (digit & 31) << shift;
        if (digit & 32) {
          shift += 5;
        } else {
          values.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = 0;
          shift = 0;
        }
      }
      genCol += values[0];
      if (values.length >= 4) {
        source += values[1];
        srcLine += values[2];
        srcCol += values[3];
        segments.push([genCol, source, srcLine, srcCol]);
      }
    }
    lines.push(segments);
  }
  return lines;
}

/** A source map's answer for a generated position (0-based), or null. */
export function originalPosition(
  map: { sources: string[]; lines: number[][][] },
  line: number,
  column: number,
): { url: string; line: number; column: number } | null {
  const segments = map.lines[line];
  if (!segments?.length) return null;
  let best = segments[0];
  for (const s of segments) if (s[0] <= column) best = s;
  return { url: map.sources[best[1]] ?? "", line: best[2], column: best[3] };
}

/** A source map as its JSON says (version 3). */
export interface RawSourceMap {
  sources?: string[];
  mappings?: string;
}

/** The inline source map at the end of an emitted module, or null. */
export function inlineSourceMap(code: string): RawSourceMap | null {
  const data = code.match(
    /\/\/# sourceMappingURL=data:application\/json[^,]*;base64,([A-Za-z0-9+/=]+)/,
  )
    ?.[1];
  if (!data) return null;
  try {
    return JSON.parse(
      new TextDecoder().decode(Uint8Array.from(atob(data), (c) => c.charCodeAt(0))),
    );
  } catch {
    return null;
  }
}

/**
 * Rewrites the profile's call frames to source positions, for the scripts (by scriptId) that
 * have a source map. Returns how many nodes it moved.
 */
export function applySourceMaps(profile: CpuProfile, maps: Map<string, RawSourceMap>): number {
  const decoded = new Map<string, { sources: string[]; lines: number[][][] }>();
  let moved = 0;
  for (const node of profile.nodes) {
    const f = node.callFrame;
    const raw = f.lineNumber >= 0 ? maps.get(f.scriptId) : undefined;
    if (!raw) continue;
    let map = decoded.get(f.scriptId);
    if (!map) {
      map = { sources: raw.sources ?? [], lines: decodeMappings(raw.mappings ?? "") };
      decoded.set(f.scriptId, map);
    }
    const pos = originalPosition(map, f.lineNumber, Math.max(0, f.columnNumber));
    if (!pos) continue;
    f.lineNumber = pos.line;
    f.columnNumber = pos.column;
    if (pos.url) f.url = pos.url;
    delete node.positionTicks; // generated lines; no longer meaningful
    moved++;
  }
  return moved;
}

/** What the agent tells of each script V8 compiled: its url and its length in characters. */
export type ScriptInfo = Record<string, { url: string; length: number }>;

/**
 * Source maps of the profile's TypeScript modules. Deno gives V8 the transpiled code without
 * its source map unless `--inspect` is on; the same code, with the map, is in Deno's emit cache
 * (`$DENO_DIR/gen/file/<path>.js`). A cached file counts only when its code is exactly as long
 * as the script V8 ran (else: an older emit, and positions stay as V8 gave them).
 */
export async function emitCacheSourceMaps(
  profile: CpuProfile,
  scripts: ScriptInfo,
  denoDir: string,
): Promise<Map<string, RawSourceMap>> {
  const maps = new Map<string, RawSourceMap>();
  const ids = new Set(profile.nodes.map((n) => n.callFrame.scriptId));
  for (const id of ids) {
    const script = scripts[id];
    if (!script?.url.startsWith("file://") || !/\.(m|c)?tsx?$/.test(script.url)) continue;
    const path = decodeURIComponent(new URL(script.url).pathname);
    const code = await Deno.readTextFile(`${denoDir}/gen/file${path}.js`).catch(() => null);
    const at = code?.lastIndexOf("//# sourceMappingURL=") ?? -1;
    if (!code || at !== script.length) continue;
    const map = inlineSourceMap(code.slice(at));
    if (map) maps.set(id, map);
  }
  return maps;
}

// --- the agent, inside the profiled process -----------------------------------------------

/**
 * Loaded into the serving process with `deno run --preload` (PROFILE_AGENT_DIR set): a
 * `node:inspector` session of the process itself. SIGUSR2 starts the profiler (then writes
 * `<dir>/started`); the next SIGUSR2 stops it and writes `<dir>/profile.json` ({ profile,
 * scripts }). In-process rather than `--inspect`: with an inspector server on, Deno's fetch
 * reports every request to it (Network.* events, a tee of each response body), which took
 * ~16% of the feed's samples in a trial run and would show in the profile as ours. Nothing here
 * keeps the event loop alive (a preload's loop runs to idle before the main module starts).
 */
async function agent(dir: string, intervalUs: number): Promise<void> {
  const { Session } = await import("node:inspector");
  const session = new Session();
  session.connect();
  const post = <T>(method: string, params?: Record<string, unknown>) =>
    new Promise<T>((resolve, reject) =>
      (session.post as (
        m: string,
        p: Record<string, unknown> | undefined,
        cb: (err: Error | null, result: T) => void,
      ) => void)(method, params, (err, result) => err ? reject(err) : resolve(result))
    );
  const scripts: ScriptInfo = {};
  session.on("inspectorNotification", (m: { method: string; params?: unknown }) => {
    if (m.method !== "Debugger.scriptParsed") return;
    const p = m.params as { scriptId: string; url: string; length: number };
    scripts[p.scriptId] = { url: p.url, length: p.length };
  });
  let profiling = false;
  Deno.addSignalListener("SIGUSR2", async () => {
    try {
      if (!profiling) {
        profiling = true;
        await post("Profiler.enable");
        await post("Profiler.setSamplingInterval", { interval: intervalUs });
        await post("Profiler.start");
        await Deno.writeTextFile(`${dir}/started`, "");
        return;
      }
      const { profile } = await post<{ profile: CpuProfile }>("Profiler.stop");
      profiling = false;
      // Enabling the debugger reports every script compiled so far (after profiling: no cost).
      await post("Debugger.enable");
      await new Promise((r) => setTimeout(r, 100));
      await post("Debugger.disable");
      await Deno.writeTextFile(`${dir}/profile.json.tmp`, JSON.stringify({ profile, scripts }));
      await Deno.rename(`${dir}/profile.json.tmp`, `${dir}/profile.json`);
    } catch (err) {
      await Deno.writeTextFile(`${dir}/error`, String(err instanceof Error ? err.stack : err));
    }
  });
}

const agentDir = import.meta.main ? undefined : Deno.env.get("PROFILE_AGENT_DIR");
if (agentDir) await agent(agentDir, Number(Deno.env.get("PROFILE_INTERVAL_US") || 1000));

// --- the command ------------------------------------------------------------------------

if (import.meta.main) await main();

/** What Linux says of a process so far, in ms; null off Linux. */
interface CpuUse {
  /** user + system time of all its threads (/proc/<pid>/stat). */
  processMs: number;
  /** Its main thread (the one JavaScript runs on): on a CPU, and runnable but waiting for one. */
  mainOnCpuMs: number;
  mainWaitMs: number;
}

function cpuUse(pid: number): CpuUse | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const [onCpuNs, waitNs] = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/schedstat`)
      .split(" ").map(Number);
    return {
      processMs: (Number(fields[11]) + Number(fields[12])) * 10, // ticks of 10 ms (CLK_TCK 100)
      mainOnCpuMs: onCpuNs / 1e6,
      mainWaitMs: waitNs / 1e6,
    };
  } catch {
    return null;
  }
}

/** Deno's cache directory (DENO_DIR, else what `deno info` says). */
async function denoDir(): Promise<string> {
  const fromEnv = Deno.env.get("DENO_DIR");
  if (fromEnv) return fromEnv;
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"] }).output();
  return JSON.parse(new TextDecoder().decode(out.stdout)).denoDir;
}

async function main() {
  const { repoRoot, freePort } = await import("../dev/local_services.ts");
  const { createDatabase, databaseUrl, dropDatabase } = await import("../dev/db.ts");
  const { startOpenAIFake } = await import("../testing/fakes/openai.ts");
  const { deleteKeys, testRedis } = await import("../testing/test_redis.ts");
  const { TextLineStream } = await import("../dev/text_lines.ts");
  const { runScenario, textSummary } = await import("../../loadtest/lib/runner.ts");
  type Scenario = import("../../loadtest/lib/runner.ts").Scenario<unknown>;

  const args = [...Deno.args];
  const outAt = args.indexOf("--out");
  const outDir = outAt >= 0
    ? args.splice(outAt, 2)[1]
    : Deno.env.get("PROFILE_DIR") ?? `${repoRoot}/.local/profiles`;
  const name = args[0];
  if (!name || !/^[a-z-]+$/.test(name) || args.length > 1 || !outDir) {
    console.error("usage: npm run profile -- <feed|mixed|recall|spike|smoke|soak> [--out DIR]");
    Deno.exit(2);
  }
  try {
    await Deno.stat(`${repoRoot}/loadtest/${name}.ts`);
  } catch {
    console.error(`no scenario loadtest/${name}.ts`);
    Deno.exit(2);
  }
  const num = (key: string, fallback: number) => Number(Deno.env.get(key) || fallback);
  const seconds = num("PROFILE_SECONDS", 20);
  const warmupS = num("PROFILE_WARMUP_S", 3);
  const intervalUs = num("PROFILE_INTERVAL_US", 1000);
  const top = num("PROFILE_TOP", 30);
  const adminUrl = Deno.env.get("DATABASE_URL") ?? "postgres://postgres@127.0.0.1:5432/postgres";
  const redisUrl = Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379";
  const log = (msg: string) => console.log(`[profile] ${msg}`);

  const cleanups: (() => Promise<unknown>)[] = [];
  const cleanUp = async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch((err) => console.error(err));
  };
  const onSignal = () => {
    log("interrupted: cleaning up");
    cleanUp().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  let exitCode = 0;
  try {
    // --- a database and a Redis prefix of its own ------------------------------------------
    let dbUrl = Deno.env.get("PROFILE_DATABASE_URL");
    const tag = crypto.randomUUID().slice(0, 8);
    if (!dbUrl) {
      const dbName = `rockout_profile_${tag}`;
      await createDatabase(adminUrl, dbName);
      cleanups.push(() => dropDatabase(adminUrl, dbName));
      dbUrl = databaseUrl(adminUrl, dbName);
    }
    const prefix = `profile:${tag}:`;
    cleanups.push(async () => {
      const r = await testRedis(redisUrl);
      try {
        await deleteKeys(r.redis, `${prefix}*`);
      } finally {
        await r.close();
      }
    });
    // The model as a service of its own (not the stack's in-process stand-in, which would
    // show in the profile).
    const openai = startOpenAIFake({
      chat: () => ({
        candidates: [{
          title: "Invented Song",
          artist: "Made Up Band",
          album: null,
          year: null,
          confidence: 0.55,
          reason: "profile",
        }],
        lyrics_fragment: null,
        title_hint: null,
        artist_hint: null,
        description: "profile",
        era: null,
        summary: "A lively thread (fake model).",
        text: "A reply from a persona (fake model).",
      }),
    });
    openai.behave({ delayMs: num("PROFILE_MODEL_MS", 300) });
    cleanups.push(() => openai.close());

    // --- the stack, with the profiling agent in its serving process --------------------------
    const port = freePort();
    const workDir = await Deno.makeTempDir({ prefix: "rockout-profile-" });
    cleanups.push(() => Deno.remove(workDir, { recursive: true }));
    log(`starting the stack on port ${port} (seeding when empty)`);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--unstable-net",
        "--unstable-no-legacy-abort",
        `--preload=${repoRoot}/scripts/bench/profile.ts`,
        `${repoRoot}/scripts/dev/start.ts`,
      ],
      cwd: repoRoot,
      env: {
        PORT: String(port),
        LOG_REQUESTS: "false",
        WORKERS: "1", // one serving process: the one profiled
        DATABASE_URL: dbUrl,
        REDIS_URL: redisUrl,
        REDIS_PREFIX: prefix,
        SEED_USERS: String(num("PROFILE_USERS", 2000)),
        SEED_POSTS: String(num("PROFILE_POSTS", 20000)),
        SEED_SONGS: String(num("PROFILE_SONGS", 2000)),
        OPENAI_API_KEY: "profile",
        OPENAI_BASE_URL: openai.baseUrl,
        // Not .local/stack.json: that one belongs to the developer's own npm start.
        STACK_FILE: `${workDir}/stack.json`,
        PROFILE_AGENT_DIR: workDir,
        PROFILE_INTERVAL_US: String(intervalUs),
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output: string[] = [];
    let markReady!: () => void;
    const ready = new Promise<void>((r) => markReady = r);
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      const lines = stream.pipeThrough(new TextDecoderStream()).pipeThrough(new TextLineStream());
      for await (const line of lines) {
        if (output.length < 5000) output.push(line);
        if (line.startsWith("rockout-edge is running at")) markReady();
      }
    };
    const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
    let exited = false;
    const status = child.status.then((s) => {
      exited = true;
      return s;
    });
    cleanups.push(async () => {
      if (!exited) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        const timer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* gone meanwhile */ }
        }, 10_000);
        await status;
        clearTimeout(timer);
      }
      await pumps;
    });
    await Promise.race([
      ready,
      status.then((s) => {
        throw new Error(
          `the stack exited (code ${s.code}) before serving:\n${output.slice(-30).join("\n")}`,
        );
      }),
    ]);
    const baseUrl = `http://127.0.0.1:${port}`;
    log(`stack up at ${baseUrl} (pid ${child.pid})`);
    /** Signals the agent, then waits for `file` in the work dir; its text. */
    const agentDo = async (file: string, timeoutMs: number) => {
      Deno.kill(child.pid, "SIGUSR2");
      for (const deadline = Date.now() + timeoutMs; Date.now() < deadline;) {
        for (const f of [file, "error"]) {
          const text = await Deno.readTextFile(`${workDir}/${f}`).catch(() => null);
          if (text !== null && f === "error") throw new Error(`profiling agent: ${text}`);
          if (text !== null) return text;
        }
        if (exited) throw new Error("the stack exited while profiling");
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`profiling agent: no ${file} after ${timeoutMs} ms`);
    };

    // --- the scenario; the profiler starts after its setup and the warm-up ------------------
    Deno.env.set("BASE_URL", baseUrl);
    if (!Deno.env.get("DURATION_S")) Deno.env.set("DURATION_S", String(seconds + warmupS));
    const { scenario } = await import(`${repoRoot}/loadtest/${name}.ts`) as {
      scenario: Scenario;
    };
    let started: Promise<{ at: number; cpu: CpuUse | null }> | null = null;
    const profiled: Scenario = {
      ...scenario,
      setup: async (client) => {
        const data = scenario.setup ? await scenario.setup(client) : undefined;
        log(`load running; profiling starts in ${warmupS} s`);
        started = new Promise((resolve, reject) =>
          setTimeout(() => {
            agentDo("started", 10_000).then(() => {
              log("profiling");
              resolve({ at: performance.now(), cpu: cpuUse(child.pid) });
            }, reject);
          }, warmupS * 1000)
        );
        return data;
      },
    };
    const result = await runScenario(profiled, baseUrl);
    if (!started) throw new Error("the scenario's setup did not finish");
    const start = await (started as Promise<{ at: number; cpu: CpuUse | null }>);
    const profiledS = (performance.now() - start.at) / 1000;
    const end = cpuUse(child.pid);
    const { profile, scripts } = JSON.parse(await agentDo("profile.json", 60_000)) as {
      profile: CpuProfile;
      scripts: ScriptInfo;
    };
    const maps = await emitCacheSourceMaps(profile, scripts, await denoDir());
    const moved = applySourceMaps(profile, maps);
    log(`source positions: ${moved} of ${profile.nodes.length} nodes (${maps.size} modules)`);
    console.log(textSummary(result));
    if (!result.ok) log("the scenario's thresholds failed (see above); the profile stands");

    await Deno.mkdir(outDir, { recursive: true });
    const file = `${outDir}/${name}.cpuprofile`;
    await Deno.writeTextFile(file, JSON.stringify(profile));
    const times = profileTimes(profile);
    const date = new Date().toISOString().slice(0, 10);
    const s1 = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    const cpu = start.cpu && end
      ? ` Meanwhile (from /proc) the process used ${
        s1(end.processMs - start.cpu.processMs)
      } of CPU (all threads); its main thread ran ${
        s1(end.mainOnCpuMs - start.cpu.mainOnCpuMs)
      } and waited ${s1(end.mainWaitMs - start.cpu.mainWaitMs)} for a CPU.`
      : "";
    const md =
      `CPU profile of the serving process during \`${name}\` (${profiledS.toFixed(1)} s, ` +
      `sampled every ${intervalUs} µs), ${date}, Deno ${Deno.version.deno}.${cpu}\n\n` +
      profileTable(times, top, repoRoot);
    await Deno.writeTextFile(`${outDir}/${name}.md`, md);
    console.log(`\n${md}`);
    log(`wrote ${file} and ${outDir}/${name}.md`);
  } catch (err) {
    console.error(`[profile] failed: ${err instanceof Error ? err.stack ?? err.message : err}`);
    exitCode = 1;
  } finally {
    await cleanUp();
  }
  Deno.exit(exitCode);
}
