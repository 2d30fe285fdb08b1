/**
 * vegeta, the outside load generator of the benchmarks (MIT, open model: requests start at the
 * offered rate whatever the latency): finding its binary and piping to it.
 *
 * @module
 */

/**
 * The vegeta binary: `VEGETA_BIN`, `vegeta` on PATH, or Go's bin folder
 * (`GOTOOLCHAIN=local go install github.com/tsenart/vegeta/v12@v12.13.0`); null when none.
 */
export function vegetaBin(): string | null {
  const home = Deno.env.get("HOME");
  for (const candidate of [Deno.env.get("VEGETA_BIN"), "vegeta", home && `${home}/go/bin/vegeta`]) {
    if (!candidate) continue;
    try {
      new Deno.Command(candidate, { args: ["-version"], stdout: "null", stderr: "null" })
        .outputSync();
      return candidate;
    } catch {
      // not installed
    }
  }
  return null;
}

/** Runs `bin args` with `input` on its stdin; resolves to its stdout. */
export function runVegeta(bin: string, args: string[], input: Uint8Array): Promise<Uint8Array> {
  const child = new Deno.Command(bin, { args, stdin: "piped", stdout: "piped" }).spawn();
  const writer = child.stdin.getWriter();
  writer.write(input).then(() => writer.close());
  return child.output().then((o) => o.stdout);
}

/** `env` without its undefined entries (to pass a test environment on to a child process). */
export function definedOnly(env: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined),
  );
}
