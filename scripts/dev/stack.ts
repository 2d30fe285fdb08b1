/**
 * Child processes for the smoke test and benchmarks: the whole stack (`scripts/dev/start.ts`,
 * what `npm start` runs) or any small server script, started and stopped cleanly.
 *
 * @module
 */
import { repoRoot } from "./local_services.ts";
import { TextLineStream } from "./text_lines.ts";

/** A running server process. */
export interface ServerProcess {
  url: string;
  pid: number;
  /** Everything it printed so far. */
  output: string[];
  stop(): Promise<void>;
}

/**
 * Runs `deno run -A <script>` with `env` added, and resolves once it prints a line for which
 * `ready` is true (it answers from then on).
 */
export async function spawnServer(
  script: string,
  port: number,
  env: Record<string, string>,
  ready: (line: string) => boolean,
): Promise<ServerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-net", "--unstable-no-legacy-abort", script],
    cwd: repoRoot,
    env: { PORT: String(port), LOG_REQUESTS: "false", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output: string[] = [];
  let markReady!: () => void;
  const started = new Promise<void>((resolve) => markReady = resolve);
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    const lines = stream.pipeThrough(new TextDecoderStream()).pipeThrough(new TextLineStream());
    for await (const line of lines) {
      if (output.length < 5000) output.push(line);
      if (ready(line)) markReady();
    }
  };
  const pumps = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const exited = child.status.then((s) => {
    throw new Error(
      `${script} exited (code ${s.code}) before serving:\n${output.slice(-30).join("\n")}`,
    );
  });
  await Promise.race([started, exited]);
  exited.catch(() => {});
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
    output,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      // A graceful stop gets a few seconds; then it is killed.
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone meanwhile */ }
      }, 5000);
      await child.status;
      clearTimeout(timer);
      await pumps;
    },
  };
}

/** Starts the whole stack on `port`; resolves once it serves. */
export function startStack(port: number, env: Record<string, string>): Promise<ServerProcess> {
  return spawnServer(
    `${repoRoot}/scripts/dev/start.ts`,
    port,
    env,
    (line) => line.startsWith("rockout-edge is running at"),
  );
}

/**
 * What a running `npm start` tells the other commands (`npm run worker|seed|migrate|token`):
 * written to `.local/stack.json` (mode 0600, not committed) once it serves, removed when it
 * stops. Only local, generated values: never a real API key.
 */
export interface LocalStack {
  /** The `npm start` process; the file counts only while it lives. */
  pid: number;
  baseUrl: string;
  databaseUrl: string;
  /** The Redis behind the bridge (REDIS_URL), when there is one. */
  redisUrl: string | null;
  /** Upstash REST endpoint the functions use (the local bridge or a real Upstash). */
  upstash: { url: string; token: string } | null;
  /** OPENAI_BASE_URL of the stand-in model, when `npm start` serves one (no key set). */
  openaiStandIn: string | null;
}

/** `.local/stack.json`, or `STACK_FILE` (tests). */
export function localStackPath(): string {
  return Deno.env.get("STACK_FILE") ?? `${repoRoot}/.local/stack.json`;
}

/** True while process `pid` exists (Linux: /proc; elsewhere assumed alive). */
export function processAlive(pid: number): boolean {
  if (Deno.build.os !== "linux") return true;
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Writes the running stack's description (0600: it holds the local Redis bridge token). */
export async function writeLocalStack(stack: LocalStack, path = localStackPath()): Promise<void> {
  await Deno.mkdir(path.replace(/\/[^/]+$/, ""), { recursive: true });
  const tmp = `${path}.${stack.pid}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(stack, null, 2) + "\n", { mode: 0o600 });
  await Deno.rename(tmp, path);
}

/** Removes the file if process `pid` wrote it. */
export async function removeLocalStack(pid: number, path = localStackPath()): Promise<void> {
  const stack = await readStackFile(path);
  if (stack?.pid === pid) await Deno.remove(path).catch(() => {});
}

async function readStackFile(path: string): Promise<LocalStack | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as LocalStack;
  } catch {
    return null;
  }
}

/** The stack a live `npm start` described, or null (no file, or its process is gone). */
export async function readLocalStack(path = localStackPath()): Promise<LocalStack | null> {
  const stack = await readStackFile(path);
  return stack && Number.isInteger(stack.pid) && processAlive(stack.pid) ? stack : null;
}

/**
 * With no DATABASE_URL set, takes the running `npm start`'s: DATABASE_URL, the Upstash
 * endpoint (unless REDIS_URL / UPSTASH_* are set), and the stand-in model when no
 * OPENAI_API_KEY is set. An explicit DATABASE_URL means another database: nothing is taken.
 * Returns the stack used, or null.
 */
export async function useLocalStack(
  env: { get(k: string): string | undefined; set(k: string, v: string): void } = Deno.env,
  path = localStackPath(),
): Promise<LocalStack | null> {
  if (env.get("DATABASE_URL") || env.get("SUPABASE_DB_URL")) return null;
  const stack = await readLocalStack(path);
  if (!stack) return null;
  const fill = (key: string, value: string | null | undefined) => {
    if (value && !env.get(key)) env.set(key, value);
  };
  fill("DATABASE_URL", stack.databaseUrl);
  if (!env.get("UPSTASH_REDIS_REST_URL") && !env.get("REDIS_URL") && stack.upstash) {
    env.set("UPSTASH_REDIS_REST_URL", stack.upstash.url);
    env.set("UPSTASH_REDIS_REST_TOKEN", stack.upstash.token);
  }
  if (!env.get("OPENAI_API_KEY") && stack.openaiStandIn) {
    env.set("OPENAI_API_KEY", "stand-in");
    fill("OPENAI_BASE_URL", stack.openaiStandIn);
    for (const key of ["OPENAI_SMALL_MODEL", "OPENAI_LARGE_MODEL", "OPENAI_TRANSCRIBE_MODEL"]) {
      fill(key, "stand-in");
    }
  }
  return stack;
}
