/**
 * A controllable local HTTP server standing in for a paid API in tests: it can answer late,
 * fail with any status, hang until the caller gives up, or send a malformed body, and it
 * counts the calls it gets and the ones the caller aborted.
 *
 * @module
 */

/** How the fake answers the next calls. */
export interface FakeBehaviour {
  /** Answer after this long. */
  delayMs?: number;
  /** Never answer (until the caller aborts). */
  hang?: boolean;
  /** Answer once this settles: a test's gate, sleep-free (e.g. "after every read is done"). */
  until?: Promise<unknown>;
  status?: number;
  headers?: Record<string, string>;
  /** A body that is not what the client expects. */
  malformed?: boolean;
}

/** A running fake. */
export interface FakeServer {
  url: string;
  /** Requests received, in order. */
  calls: { method: string; path: string; body: string; headers: Headers }[];
  /** Requests whose caller went away before the answer. */
  aborted: number;
  /** Sets the behaviour for the calls that follow (to paths starting with `pathPrefix`). */
  behave(b: FakeBehaviour, pathPrefix?: string): void;
  /** Calls received on paths starting with `pathPrefix`. */
  count(pathPrefix?: string): number;
  close(): Promise<void>;
}

/**
 * Starts a fake on an ephemeral port. `respond` builds the normal answer of a call (its JSON
 * body); the behaviour decides whether and how it is delivered.
 */
export function startFakeServer(
  portOrRespond: number | ((req: Request, body: string) => unknown | Promise<unknown>) = 0,
  respondArg?: (req: Request, body: string) => unknown | Promise<unknown>,
): FakeServer {
  const port = typeof portOrRespond === "number" ? portOrRespond : 0;
  const respond = (typeof portOrRespond === "function" ? portOrRespond : respondArg) ??
    (() => ({ ok: true }));
  const behaviours = new Map<string, FakeBehaviour>([["", {}]]);
  const behaviourFor = (path: string) => {
    let best = "";
    for (const prefix of behaviours.keys()) {
      if (path.startsWith(prefix) && prefix.length > best.length) best = prefix;
    }
    return behaviours.get(best)!;
  };
  const fake: FakeServer = {
    url: "",
    calls: [],
    aborted: 0,
    behave(b, pathPrefix = "") {
      behaviours.set(pathPrefix, b);
    },
    count(pathPrefix = "") {
      return fake.calls.filter((c) => c.path.startsWith(pathPrefix)).length;
    },
    close: () => server.shutdown(),
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, async (req) => {
    const body = req.body ? await req.text() : "";
    const url = new URL(req.url);
    fake.calls.push({
      method: req.method,
      path: url.pathname + url.search,
      body,
      headers: req.headers,
    });
    const b = behaviourFor(url.pathname);
    const gone = new Promise<"gone">((resolve) =>
      req.signal.addEventListener("abort", () => resolve("gone"), { once: true })
    );
    if (b.hang || b.delayMs || b.until) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waited = b.hang
        ? new Promise<"time">(() => {})
        : b.until
        ? b.until.then(() => "time" as const, () => "time" as const)
        : new Promise<"time">((r) => {
          timer = setTimeout(() => r("time"), b.delayMs);
        });
      const outcome = await Promise.race([waited, gone]);
      clearTimeout(timer);
      if (outcome === "gone") {
        fake.aborted++;
        return new Response(null, { status: 499 });
      }
    }
    const status = b.status ?? 200;
    const headers = { "content-type": "application/json", ...b.headers };
    if (b.malformed) return new Response("{not json", { status, headers });
    if (status >= 400) {
      return new Response(JSON.stringify({ error: { message: `fake ${status}`, type: "fake" } }), {
        status,
        headers,
      });
    }
    return new Response(JSON.stringify(await respond(req, body)), { status, headers });
  });
  fake.url = `http://127.0.0.1:${server.addr.port}`;
  return fake;
}
