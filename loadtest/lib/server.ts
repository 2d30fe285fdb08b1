/**
 * Samplers of the server under test, for `Scenario.samplers`: resident memory and CPU time
 * of the process whose pid is SERVER_PID (Linux /proc), when given.
 *
 * @module
 */

/** The server's pid from SERVER_PID, or null. */
export function serverPid(): number | null {
  const pid = Number(Deno.env.get("SERVER_PID"));
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

/** Resident set size of `pid` in MB (`VmRSS`). */
export async function rssMb(pid: number): Promise<number | null> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`).catch(() => null);
  const kb = status?.match(/^VmRSS:\s+(\d+) kB/m)?.[1];
  return kb ? Number(kb) / 1024 : null;
}

/** CPU seconds (user + system) `pid` has used so far. */
export async function cpuSeconds(pid: number): Promise<number | null> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => null);
  if (!stat) return null;
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks (100 Hz)
}

/** Samplers for the server process, or none when SERVER_PID is not set. */
export function serverSamplers(): Record<string, () => Promise<number | null>> {
  const pid = serverPid();
  if (!pid) return {};
  return { server_rss_mb: () => rssMb(pid), server_cpu_s: () => cpuSeconds(pid) };
}
