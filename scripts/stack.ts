/**
 * Child processes for the smoke test and benchmarks: the whole stack (`scripts/start.ts`,
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
    args: ["run", "-A", "--unstable-net", script],
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
    `${repoRoot}/scripts/start.ts`,
    port,
    env,
    (line) => line.startsWith("rockout-edge is running at"),
  );
}
