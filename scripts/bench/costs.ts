/**
 * What one benchmark step cost, beyond latency: CPU time of the serving process(es) and the
 * Redis commands executed, counted the way Upstash bills them.
 *
 * - CPU: utime + stime of `/proc/<pid>/stat` (all threads of the process), for the server's
 *   process and any `scripts/dev/serve.ts` children it started (`WORKERS` > 1). Linux only;
 *   elsewhere `null`.
 * - Commands: `INFO commandstats` of the Redis behind the bridge, summed over every command
 *   except INFO itself. Commands a Lua script runs (`redis.call`) are counted there too, as
 *   Upstash counts them (https://upstash.com/docs/redis/sdks/ratelimit-ts/costs). INFO is
 *   server-wide: on a Redis other processes use, their commands land in the same counters.
 *
 * @module
 */
import { Redis } from "ioredis";

/** Clock ticks per second of /proc times (`getconf CLK_TCK`; 100 on every Linux we run on). */
let ticksPerSecond: number | undefined;

async function clockTicks(): Promise<number> {
  if (ticksPerSecond === undefined) {
    try {
      const out = await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" })
        .output();
      ticksPerSecond = Number(new TextDecoder().decode(out.stdout).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** `[ppid, utime + stime in ticks]` of one process, or null when it is gone. */
function readStat(pid: number): { ppid: number; ticks: number } | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  // Fields after the command name (which may hold spaces and parentheses): state is field 3.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]) };
}

/**
 * The serving processes of a server started as `pid`: itself, plus its children that serve
 * the same port (`scripts/dev/serve.ts`, started by `npm start` with `WORKERS` > 1). Not the
 * jobs worker `npm start` also runs: it serves no request.
 */
export function servingPids(pid: number): number[] {
  const pids = [pid];
  let entries: Iterable<Deno.DirEntry>;
  try {
    entries = Deno.readDirSync("/proc");
  } catch {
    return pids;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry.name)) continue;
    const child = Number(entry.name);
    if (readStat(child)?.ppid !== pid) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${child}/cmdline`);
      if (cmdline.includes("scripts/dev/serve.ts")) pids.push(child);
    } catch { /* gone meanwhile */ }
  }
  return pids;
}

/** CPU time (user + system) in ms the processes used so far; null off Linux. */
export async function cpuMs(pids: number[]): Promise<number | null> {
  if (Deno.build.os !== "linux") return null;
  const hz = await clockTicks();
  let ticks = 0;
  for (const pid of pids) ticks += readStat(pid)?.ticks ?? 0;
  return (ticks * 1000) / hz;
}

/** Calls per command name, from `INFO commandstats`. */
export type CommandCalls = Record<string, number>;

/** Parses `INFO commandstats` (`cmdstat_<name>:calls=<n>,usec=...` lines). */
export function parseCommandStats(info: string): CommandCalls {
  const calls: CommandCalls = {};
  for (const line of info.split(/\r?\n/)) {
    const m = line.match(/^cmdstat_([^:]+):calls=(\d+)/);
    if (m) calls[m[1]] = Number(m[2]);
  }
  return calls;
}

/** `after - before` per command, INFO left out, zeros dropped. */
export function commandDelta(before: CommandCalls, after: CommandCalls): CommandCalls {
  const delta: CommandCalls = {};
  for (const [name, n] of Object.entries(after)) {
    if (name === "info") continue;
    const d = n - (before[name] ?? 0);
    if (d > 0) delta[name] = d;
  }
  return delta;
}

/** Sum of a delta's calls. */
export function totalCalls(calls: CommandCalls): number {
  return Object.values(calls).reduce((a, b) => a + b, 0);
}

/** Reads a Redis server's command counters over one connection of its own. */
export class CommandCounter {
  #redis: Redis;

  constructor(redisUrl: string) {
    this.#redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  }

  /** The counters now. */
  async snapshot(): Promise<CommandCalls> {
    return parseCommandStats(await this.#redis.info("commandstats"));
  }

  async close(): Promise<void> {
    await this.#redis.quit().catch(() => this.#redis.disconnect());
  }
}
