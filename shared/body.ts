/**
 * Request bodies read under a size limit and a deadline, before the request is admitted.
 *
 * Written by hand because no middleware we can use does both: hono's `bodyLimit` counts a
 * chunked body but has no deadline, so a client that trickles one byte every half second keeps
 * its request (and, behind it, an admission slot) for as long as it likes. Here the body is
 * read into memory first, counting bytes as they stream (413 the moment the limit is passed,
 * the rest is never read), against a deadline modelled on Apache's mod_reqtimeout: the client
 * gets `timeoutMs` to start plus one second per `minBytesPerS` received, so a stalled or
 * trickling upload gets 408 within seconds while a real one on a slow link keeps going.
 * Only then does the request compete for a slot (see admission.ts).
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import { ProblemError } from "./problem.ts";

/** Options of {@link readBody}. */
export interface BodyOptions {
  /** Largest accepted body (bytes). */
  maxBytes: number;
  /** Time to send the first bytes, and the grace any body gets (ms). */
  timeoutMs: number;
  /** Each byte received extends the deadline at this rate (bytes per second). */
  minBytesPerS: number;
}

/** 413 naming the limit. */
export function payloadTooLarge(maxBytes: number): ProblemError {
  return new ProblemError(413, "payload_too_large", `the request body exceeds ${maxBytes} bytes`);
}

/** 408: the body did not arrive in time. */
export function bodyTimeout(received?: number): ProblemError {
  const got = received === undefined ? "" : ` (${received} bytes received)`;
  return new ProblemError(
    408,
    "request_timeout",
    `the request body did not arrive in time${got}; send it at once`,
    { headers: { connection: "close" } },
  );
}

/**
 * Reads a body stream whole under the limit and the deadline. Throws a 413 or 408
 * ProblemError (and cancels the stream, so the rest is never read), or a 400 when the client
 * broke off.
 */
export async function readBody(
  stream: ReadableStream<Uint8Array<ArrayBuffer>>,
  options: BodyOptions,
): Promise<Uint8Array<ArrayBuffer>> {
  const start = performance.now();
  const reader = stream.getReader();
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let size = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    for (;;) {
      const deadline = start + options.timeoutMs + (size * 1000) / options.minBytesPerS;
      const wait = deadline - performance.now();
      if (wait <= 0) throw bodyTimeout(size);
      const expired = new Promise<"expired">((resolve) => {
        timer = setTimeout(() => resolve("expired"), wait);
      });
      let result: ReadableStreamReadResult<Uint8Array<ArrayBuffer>> | "expired";
      try {
        result = await Promise.race([reader.read(), expired]);
      } catch {
        throw new ProblemError(400, "malformed_body", "the request body could not be read");
      } finally {
        clearTimeout(timer);
      }
      if (result === "expired") throw bodyTimeout(size);
      if (result.done) break;
      size += result.value.byteLength;
      if (size > options.maxBytes) throw payloadTooLarge(options.maxBytes);
      // A byte stream hands out views into 64 KiB buffers: keep a trickled byte, not its buffer.
      const chunk = result.value;
      chunks.push(chunk.byteLength * 2 < chunk.buffer.byteLength ? chunk.slice() : chunk);
    }
  } catch (err) {
    reader.cancel().catch(() => {}); // stop reading from the socket
    throw err;
  }
  if (chunks.length === 1) return chunks[0];
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

/**
 * Reads a body of a declared length (the HTTP layer delivers no more than that) whole, natively,
 * by a deadline fixed up front: `timeoutMs` plus the time the declared bytes take at
 * `minBytesPerS`. Measured: 300 connections trickling a byte each every 500 ms cost the
 * isolate nothing this way, while a JS read per chunk (64 KiB allocated for each) made every
 * other request wait. On a 408 the pending read ends when the connection closes.
 */
export async function readDeclared(
  req: Request,
  length: number,
  options: Omit<BodyOptions, "maxBytes">,
): Promise<Uint8Array<ArrayBuffer>> {
  const reading = req.arrayBuffer();
  reading.catch(() => {}); // after a 408 it fails when the connection closes
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<"expired">((resolve) => {
    timer = setTimeout(
      () => resolve("expired"),
      options.timeoutMs + (length * 1000) / options.minBytesPerS,
    );
  });
  try {
    const result = await Promise.race([reading, expired]);
    if (result === "expired") throw bodyTimeout();
    return new Uint8Array(result);
  } catch (err) {
    if (err instanceof ProblemError) throw err;
    throw new ProblemError(400, "malformed_body", "the request body could not be read");
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Middleware: a declared `Content-Length` past the limit is refused before reading, one within
 * it is read with {@link readDeclared}; any other body (chunked, multipart included) is counted
 * as it streams with {@link readBody}. The body is handed on in memory. `maxBytes` may depend
 * on the request (e.g. its content type).
 */
export function bodyGuard(
  options: Omit<BodyOptions, "maxBytes"> & { maxBytes: number | ((c: Context) => number) },
): MiddlewareHandler {
  return async (c, next) => {
    const raw = c.req.raw;
    if (!raw.body) return await next();
    const maxBytes = typeof options.maxBytes === "function"
      ? options.maxBytes(c)
      : options.maxBytes;
    const declared = raw.headers.get("content-length");
    if (declared !== null && Number(declared) > maxBytes) {
      raw.body.cancel().catch(() => {});
      throw payloadTooLarge(maxBytes);
    }
    const length = declared === null ? NaN : Number(declared);
    const body = Number.isSafeInteger(length) && length >= 0
      ? await readDeclared(raw, length, options)
      : await readBody(raw.body, { ...options, maxBytes });
    c.req.raw = new Request(raw, { body });
    await next();
  };
}
