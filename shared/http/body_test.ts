import { assert, assertEquals } from "../../scripts/testing/assert.ts";
import { assertProblem } from "../../scripts/testing/test_http.ts";
import { unitDeps } from "../../scripts/testing/unit_env.ts";
import { readBody } from "./body.ts";
import { createFunctionApp } from "./app.ts";
import { ProblemError } from "./problem.ts";

const deps = unitDeps();

/** A stream that sends `chunk` every `everyMs`, `times` times (then ends), counting pulls. */
function trickle(chunk: Uint8Array<ArrayBuffer>, everyMs: number, times = Infinity) {
  const stats = { sent: 0, cancelled: false };
  const stream = new ReadableStream<Uint8Array<ArrayBuffer>>({
    async pull(controller) {
      if (stats.sent >= times) return controller.close();
      if (everyMs > 0) await new Promise((r) => setTimeout(r, everyMs));
      stats.sent++;
      controller.enqueue(chunk);
    },
    cancel() {
      stats.cancelled = true;
    },
  }, { highWaterMark: 0 });
  return { stream, stats };
}

/** Deadlines of these tests: 300 ms grace, 1 s idle, 64 KiB/s after the grace. */
const opts = { timeoutMs: 300, idleMs: 1000, minBytesPerS: 65536 };

async function status(p: Promise<unknown>): Promise<number> {
  const err: unknown = await p.then(() => null, (e) => e);
  assert(err instanceof ProblemError, `expected a ProblemError, got ${err}`);
  return err.status;
}

Deno.test("a stalled body gets 408 at the deadline, and the stream is cancelled", async () => {
  const { stream, stats } = trickle(new Uint8Array(1), 60_000);
  const start = performance.now();
  const got = await status(
    readBody(stream, { maxBytes: 100, timeoutMs: 300, idleMs: 5000, minBytesPerS: 100 }),
  );
  const ms = performance.now() - start;
  assertEquals(got, 408);
  assert(ms >= 290 && ms < 5000, `answered after ${ms} ms`);
  assertEquals(stats.cancelled, true);
});

Deno.test("a declared 1,000,000-byte body that sends one byte gets 408 after the grace, not 15 s later", async () => {
  // Today's fixed deadline was grace + length / rate: 300 ms + 15 s at 64 KiB/s.
  const { stream, stats } = trickle(new Uint8Array(1), 50, 1_000_000);
  const start = performance.now();
  const got = await status(
    readBody(stream, { ...opts, maxBytes: 2_000_000, declared: 1_000_000 }),
  );
  const ms = performance.now() - start;
  assertEquals(got, 408);
  assert(ms >= 290 && ms < 5000, `answered after ${ms} ms`);
  assertEquals(stats.cancelled, true);
  // a declared body that arrives whole is read into one buffer of that size
  const whole = new Blob(["0123456789"]).stream() as ReadableStream<Uint8Array<ArrayBuffer>>;
  const body = await readBody(whole, { ...opts, maxBytes: 100, declared: 10 });
  assertEquals(new TextDecoder().decode(body), "0123456789");
});

Deno.test("no byte for idleMs is a stall: 408 before the grace runs out", async () => {
  const { stream } = trickle(new Uint8Array(1), 60_000);
  const start = performance.now();
  const got = await status(
    readBody(stream, { maxBytes: 100, timeoutMs: 10_000, idleMs: 300, minBytesPerS: 65536 }),
  );
  const ms = performance.now() - start;
  assertEquals(got, 408);
  assert(ms >= 290 && ms < 8000, `answered after ${ms} ms (the grace is 10 s)`);
});

Deno.test("a trickle (a byte every 50 ms) gets 408 near the deadline, not when the body ends", async () => {
  const { stream, stats } = trickle(new Uint8Array(1), 50, 1000);
  const start = performance.now();
  const got = await status(
    readBody(stream, { maxBytes: 10_000, timeoutMs: 400, idleMs: 5000, minBytesPerS: 1000 }),
  );
  const ms = performance.now() - start;
  assertEquals(got, 408);
  // ~8 bytes in 400 ms buy 8 ms more: far from the 50 s the whole body would take
  assert(ms >= 390 && ms < 10_000, `answered after ${ms} ms`);
  assert(stats.sent < 30, `${stats.sent} chunks read`);
});

Deno.test("a body that keeps coming at the minimum rate may take longer than the grace period", async () => {
  // 1 KiB every 20 ms = 50 KiB/s for ~600 ms, with a 200 ms grace and a 16 KiB/s floor.
  const { stream } = trickle(new Uint8Array(1024), 20, 30);
  const body = await readBody(stream, {
    maxBytes: 64 * 1024,
    timeoutMs: 200,
    idleMs: 5000,
    minBytesPerS: 16384,
  });
  assertEquals(body.byteLength, 30 * 1024);
});

Deno.test("an endless chunked body gets 413 at the limit; the rest is never read", async () => {
  const { stream, stats } = trickle(new Uint8Array(1000), 0);
  const got = await status(
    readBody(stream, { maxBytes: 10_000, timeoutMs: 5000, idleMs: 5000, minBytesPerS: 1 }),
  );
  assertEquals(got, 413);
  assertEquals(stats.sent, 11); // the chunk that crossed the limit, no more
  assertEquals(stats.cancelled, true);
});

Deno.test("the app answers a chunked body past the limit 413 problem+json with CORS headers", async () => {
  const app = createFunctionApp("t", deps, { maxBodyBytes: 4096, anonymousBodies: true });
  let handled = 0;
  app.post("/echo", async (c) => {
    handled++;
    return c.json({ bytes: (await c.req.arrayBuffer()).byteLength });
  });
  const { stream, stats } = trickle(new Uint8Array(1024), 0);
  const res = await app.request("/t/echo", {
    method: "POST",
    body: stream,
    headers: { origin: "https://app.example", "transfer-encoding": "chunked" },
  });
  await assertProblem(res, 413, "4096 bytes");
  assertEquals(res.headers.get("access-control-allow-origin"), "*");
  assert(stats.sent <= 5, `${stats.sent} KiB read of a 4 KiB limit`);
  assertEquals(handled, 0);
  // multipart is counted the same way
  const form = new FormData();
  form.set("audio", new File([new Uint8Array(8192)], "a.webm", { type: "audio/webm" }));
  const multipart = new Request("http://x/t/echo", { method: "POST", body: form });
  const streamed = new Request(multipart.url, {
    method: "POST",
    body: multipart.body,
    headers: { "content-type": multipart.headers.get("content-type")! },
  });
  await assertProblem(await app.request(streamed), 413);
  // within the limit the route reads the body as usual
  const ok = await app.request("/t/echo", { method: "POST", body: new Uint8Array(4096) });
  assertEquals(await ok.json(), { bytes: 4096 });
});

Deno.test("a declared Content-Length past the limit is refused before reading", async () => {
  const app = createFunctionApp("u", deps, { maxBodyBytes: 10, anonymousBodies: true });
  app.post("/x", (c) => c.text("read"));
  const { stream, stats } = trickle(new Uint8Array(1), 0);
  const req = new Request("http://x/u/x", {
    method: "POST",
    body: stream,
    headers: { "content-length": "11" },
  });
  await assertProblem(await app.request(req), 413, "10 bytes");
  assertEquals(stats.sent, 0);
});

Deno.test("a compressed request body is refused 415 naming Content-Encoding, before reading it", async () => {
  const app = createFunctionApp("z", deps, { anonymousBodies: true });
  let handled = 0;
  app.post("/x", (c) => (handled++, c.text("read")));
  for (const coding of ["gzip", "br", "deflate, gzip"]) {
    const { stream, stats } = trickle(new Uint8Array(1), 0, 10);
    const res = await app.request("/z/x", {
      method: "POST",
      body: stream,
      headers: { "content-encoding": coding, "content-type": "application/json" },
    });
    await assertProblem(res, 415, "Content-Encoding");
    assertEquals(stats.sent, 0, coding);
  }
  const plain = await app.request("/z/x", {
    method: "POST",
    body: "{}",
    headers: { "content-encoding": "identity" },
  });
  assertEquals(plain.status, 200);
  assertEquals(handled, 1);
});
