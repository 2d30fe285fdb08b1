/**
 * Starts the whole stack (`scripts/start.ts`, what `npm start` runs) as a child process for
 * the smoke test and benchmarks, and stops it cleanly.
 *
 * @module
 */
import { repoRoot } from "./local_services.ts";
import { TextLineStream } from "./text_lines.ts";

/** A running stack. */
export interface Stack {
  url: string;
  pid: number;
  /** Everything the stack printed so far. */
  output: string[];
  stop(): Promise<void>;
}

/** Starts the stack on `port` with `env` added; resolves once it serves. */
export async function startStack(port: number, env: Record<string, string>): Promise<Stack> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${repoRoot}/scripts/start.ts`],
    cwd: repoRoot,
    env: { PORT: String(port), LOG_REQUESTS: "false", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output: string[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>, onLine?: (l: string) => void) => {
    for await (const line of stream.pipeThrough(new TextDecoderStream()).pipeThrough(new TextLineStream())) {
      output.push(line);
      onLine?.(line);
    }
  };
  let ready!: () => void;
  const started = new Promise<void>((resolve) => ready = resolve);
  const pumps = Promise.all([
    collect(child.stdout, (line) => line.startsWith("rockout-edge is running at") && ready()),
    collect(child.stderr),
  ]);
  const exited = child.status.then((s) => {
    throw new Error(`the stack exited (code ${s.code}) before serving:\n${output.slice(-30).join("\n")}`);
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
      await child.status;
      await pumps;
    },
  };
}
