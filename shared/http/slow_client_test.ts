/**
 * Slow and oversized clients against the real stack (gateway on a loopback port, real Postgres
 * and Redis): 300 connections trickling a `PATCH /profiles/me` body while other users read
 * their feeds, and chunked bodies that never end. Timing goals are measured by
 * `scripts/bench/bench_admission.ts`; this file asserts the behaviour.
 */
import { createGateway } from "../../scripts/dev/gateway.ts";
import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { DEMO_USER_ID, seed, seededUserId } from "../../scripts/testing/seed.ts";
import { functionTestEnv } from "../../scripts/testing/test_env.ts";
import { suite } from "../../scripts/testing/test_http.ts";

/**
 * Every function behind the gateway on a loopback port, admission at its defaults. The body
 * deadlines are shorter than the defaults (1 s grace instead of 3 s, 1.5 s idle instead of
 * 2.5 s; the rate floor as by default) so that a slow body is cut off, and reconnects,
 * several times while the readers run.
 */
async function setup() {
  const env = await functionTestEnv({
    env: { BODY_READ_TIMEOUT_MS: "1000", BODY_IDLE_TIMEOUT_MS: "1500" },
  });
  await seed(env.db.sql, { users: 30, posts: 300 });
  const gateway = await createGateway({ deps: env.deps, jwks: env.keys.jwks });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, gateway.fetch);
  return {
    env,
    port: server.addr.port,
    attacker: await env.keys.mint(DEMO_USER_ID),
    async close() {
      await server.shutdown();
      await env.close();
    },
  };
}

const it = suite("slow clients", setup);
const encoder = new TextEncoder();

/** Writes all of `data` (a socket write may take only part of it). */
async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}

/** Reads until the status line of the answer arrives (or the connection closes). */
async function statusLine(conn: Deno.Conn): Promise<string> {
  const buf = new Uint8Array(1024);
  let text = "";
  for (let i = 0; i < 100 && !text.includes("\r\n"); i++) {
    const n = await conn.read(buf).catch(() => null);
    if (n === null) break;
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
  return text.split("\r\n")[0];
}

/** A raw connection that sends `head`, then its body through `send`, until answered. */
async function rawRequest(
  port: number,
  head: string,
  send: (conn: Deno.Conn, answered: () => boolean) => Promise<number>,
): Promise<{ status: string; sent: number; ms: number }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, encoder.encode(head));
    const start = performance.now();
    let done = false;
    const answer = statusLine(conn).then((s) => {
      done = true;
      return { status: s, ms: performance.now() - start };
    });
    const sent = await send(conn, () => done).catch(() => -1); // the server may close first
    const { status, ms } = await answer;
    return { status, sent, ms };
  } finally {
    conn.close();
  }
}

it("300 slow-body connections from one IP hold no slot: other users' feeds stay up", async ({ env, port, attacker }) => {
  const { admission, config } = env.deps;
  const bodyBytes = 64;
  const head = [
    "PATCH /functions/v1/profiles/me HTTP/1.1",
    "host: 127.0.0.1",
    `authorization: Bearer ${attacker}`,
    "content-type: application/json",
    `content-length: ${bodyBytes}`,
    "",
    "",
  ].join("\r\n");
  // 300 connections trickling a byte every 500 ms, each reconnecting after its answer (a
  // second after a 429, as its Retry-After says) until the readers are done.
  let reading = true;
  const answers: { status: string; sent: number; ms: number }[] = [];
  const slow = Array.from({ length: 300 }, async () => {
    while (reading) {
      const a = await rawRequest(port, head, async (conn, answered) => {
        let sent = 0;
        for (; sent < bodyBytes && !answered(); sent++) {
          await writeAll(conn, encoder.encode(sent === 0 ? "{" : " "));
          await new Promise((r) => setTimeout(r, 500));
        }
        return sent;
      });
      answers.push(a);
      if (a.status.startsWith("HTTP/1.1 429")) await new Promise((r) => setTimeout(r, 1000));
    }
  });

  const readers = await Promise.all(
    Array.from({ length: 10 }, (_, i) => env.keys.mint(seededUserId(i + 5))),
  );
  const latencies: number[] = [];
  let failures = 0;
  let bodiesHeldByAttacker = 0;
  const statuses = new Map<number, number>();
  const start = performance.now();
  // Readers run while the slow bodies keep coming (each cut off and back within ~1 s).
  const reads = 30;
  await Promise.all(readers.map(async (token) => {
    for (let i = 0; i < reads; i++) {
      const t0 = performance.now();
      const res = await fetch(`http://127.0.0.1:${port}/functions/v1/feed?kind=following`, {
        headers: { authorization: `Bearer ${token}` },
      });
      await res.body?.cancel();
      latencies.push(performance.now() - t0);
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status !== 200) failures++;
      bodiesHeldByAttacker = Math.max(bodiesHeldByAttacker, admission.held(`user:${DEMO_USER_ID}`));
      await new Promise((r) => setTimeout(r, 100)); // pacing: a person scrolling, not a flood
    }
  }));
  reading = false;
  const readMs = performance.now() - start;
  await Promise.all(slow);
  latencies.sort((a, b) => a - b);
  const p95 = latencies[Math.floor(latencies.length * 0.95)];
  const byStatus = new Map<string, number>();
  for (const a of answers) byStatus.set(a.status, (byStatus.get(a.status) ?? 0) + 1);
  console.log(
    `feed reads: ${latencies.length} in ${Math.round(readMs)} ms, ${failures} failed ` +
      `(${JSON.stringify(Object.fromEntries(statuses))}), p95 ${p95.toFixed(1)} ms; ` +
      `slow bodies: ${JSON.stringify(Object.fromEntries(byStatus))}`,
  );
  assertEquals(latencies.length, readers.length * reads);
  assert(failures / latencies.length <= 0.01, `${failures} of ${latencies.length} reads failed`);
  // The attacker's cap is taken before its bodies are read: at most 16 in flight at once.
  assert(bodiesHeldByAttacker <= config.admission.perUser, `${bodiesHeldByAttacker} bodies`);
  // Every slow body was refused at once (429, its own cap) or cut off with 408 a few seconds
  // in (grace + slack: a loaded machine delays timers), long before the 32 s it would take.
  const limitMs = 2 * (config.body.timeoutMs + config.body.idleMs);
  let cut = 0;
  for (const a of answers) {
    if (a.status === "HTTP/1.1 429 Too Many Requests") continue;
    assertEquals(a.status, "HTTP/1.1 408 Request Timeout");
    assert(a.ms < limitMs, `408 after ${a.ms} ms`);
    assert(a.sent < bodyBytes, `${a.sent} bytes sent`);
    cut++;
  }
  assert(cut >= config.admission.perUser, `only ${cut} bodies were read at all`);
});

it("a chunked body past the limit gets 413 while it is still streaming", async ({ env, port, attacker }) => {
  const { config } = env.deps;
  const chunk = encoder.encode(`10000\r\n${" ".repeat(0x10000)}\r\n`);
  for (
    const [path, limit] of [
      ["/functions/v1/profiles/me", config.maxBodyBytes],
      ["/functions/v1/recall-resolve", 9 * 1024 * 1024],
    ] as const
  ) {
    const method = path.endsWith("/me") ? "PATCH" : "POST";
    const head = [
      `${method} ${path} HTTP/1.1`,
      "host: 127.0.0.1",
      `authorization: Bearer ${attacker}`,
      path.endsWith("/me")
        ? "content-type: application/json"
        : "content-type: multipart/form-data; boundary=x",
      "transfer-encoding: chunked",
      "",
      "",
    ].join("\r\n");
    const total = 4 * limit; // bounded: a body four times the limit, never finished
    const { status, sent } = await rawRequest(port, head, async (conn, answered) => {
      let sent = 0;
      while (sent < total && !answered()) {
        await writeAll(conn, chunk);
        sent += 0x10000;
      }
      return sent;
    });
    assertEquals(status, "HTTP/1.1 413 Payload Too Large", path);
    assert(sent === -1 || sent < total, `${path}: the whole ${sent} bytes were read`);
  }
});
