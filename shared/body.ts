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
export function bodyTimeout(received: number): ProblemError {
  return new ProblemError(
    408,
    "request_timeout",
    `the request body did not arrive in time (${received} bytes received); send it at once`,
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
 * Middleware: a declared `Content-Length` past the limit is refused before reading; any other
 * body (chunked and multipart included) is read with {@link readBody} and handed on in memory.
 * `maxBytes` may depend on the request (e.g. its content type).
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
    const body = await readBody(raw.body, { ...options, maxBytes });
    c.req.raw = new Request(raw, { body });
    await next();
  };
}
