/**
 * Request bodies read under a size limit, a shared memory budget and deadlines, before the
 * request takes a work slot.
 *
 * Written by hand because no middleware we can use does this: hono's `bodyLimit` counts a
 * chunked body but has no deadline and no shared budget. The body is read into memory counting
 * bytes as they stream (413 the moment the limit is passed, the rest is never read), against
 * two deadlines after Apache's mod_reqtimeout: no byte for `idleMs` is a stall, and after a
 * grace of `timeoutMs` the body must keep up with `minBytesPerS` (received >= rate x (elapsed
 * - grace)). A stalled or trickling upload gets 408 within about `timeoutMs`, whatever length
 * it declared; a real upload at the minimum rate keeps going. Every byte held is reserved from
 * an isolate-wide {@link BodyBudget} first: a body that doesn't fit gets 503 at once.
 * The caller's own in-flight cap is taken before (admission.ts `admitCaller`), so one client
 * has at most its cap of bodies in flight.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import { metrics } from "./metrics.ts";
import { ProblemError } from "./problem.ts";

/** Options of {@link readBody}. */
export interface BodyOptions {
  /** Largest accepted body (bytes). */
  maxBytes: number;
  /** Grace (ms) before the minimum rate applies: small bodies must be whole by then. */
  timeoutMs: number;
  /** No byte for this long (ms) is a stall. */
  idleMs: number;
  /** After the grace, the body must have come at least at this rate (bytes per second). */
  minBytesPerS: number;
}

/**
 * Bytes of request bodies an isolate holds at once. Reserved before a byte is read (the
 * declared length, or each chunk of a chunked body as it arrives) and given back when the
 * request is answered: without it, 60 uploads of 8 MB each held back by one byte took an
 * isolate past 2.7 GB.
 */
export class BodyBudget {
  #used = 0;

  constructor(readonly maxBytes: number) {}

  /** Bytes reserved now. */
  get used(): number {
    return this.#used;
  }

  /** Reserves `bytes`, or false when they don't fit. */
  reserve(bytes: number): boolean {
    if (this.#used + bytes > this.maxBytes) return false;
    this.#used += bytes;
    return true;
  }

  /** Gives `bytes` back. */
  release(bytes: number): void {
    this.#used = Math.max(0, this.#used - bytes);
  }
}

/** 413 naming the limit. */
export function payloadTooLarge(maxBytes: number): ProblemError {
  return new ProblemError(413, "payload_too_large", `the request body exceeds ${maxBytes} bytes`);
}

/** 408: the body did not arrive in time. */
export function bodyTimeout(received: number, why: string): ProblemError {
  return new ProblemError(
    408,
    "request_timeout",
    `the request body did not arrive in time (${received} bytes received; ${why}); send it at once`,
    { headers: { connection: "close" } },
  );
}

/** 503: the isolate holds as many body bytes as it may. */
function bufferFull(): ProblemError {
  metrics.inc("requests_shed_total", { reason: "body_buffer" });
  return new ProblemError(
    503,
    "unavailable",
    "the server is receiving too many request bodies at once, retry shortly",
    { headers: { "retry-after": "1" } },
  );
}

/** 415: a content coding on the request body. */
function encodedBody(coding: string): ProblemError {
  return new ProblemError(
    415,
    "unsupported_media_type",
    `Content-Encoding "${coding}" is not accepted: send the request body uncompressed`,
    { headers: { "accept-encoding": "identity" } },
  );
}

/**
 * Reads a body stream whole under the limit and the deadlines. `declared` (a Content-Length)
 * lets it fill one buffer of that size instead of keeping chunks; `reserve` is asked for every
 * chunk's bytes when nothing was reserved up front (false: 503). Throws a 413, 408 or 503
 * ProblemError (and cancels the stream, so the rest is never read), or a 400 when the client
 * broke off.
 */
export async function readBody(
  stream: ReadableStream<Uint8Array<ArrayBuffer>>,
  options: BodyOptions & { declared?: number; reserve?: (bytes: number) => boolean },
): Promise<Uint8Array<ArrayBuffer>> {
  const start = performance.now();
  const reader = stream.getReader();
  const declared = options.declared;
  const whole = declared === undefined ? null : new Uint8Array(declared);
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let size = 0;
  let lastByte = start;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let pending: Promise<ReadableStreamReadResult<Uint8Array<ArrayBuffer>>> | undefined;
  try {
    for (;;) {
      const idleAt = lastByte + options.idleMs;
      const slowAt = start + options.timeoutMs + (size * 1000) / options.minBytesPerS;
      const wait = Math.min(idleAt, slowAt) - performance.now();
      if (wait <= 0) {
        throw bodyTimeout(
          size,
          idleAt <= slowAt
            ? `nothing for ${options.idleMs} ms`
            : `slower than ${options.minBytesPerS} bytes/s after ${options.timeoutMs} ms`,
        );
      }
      const expired = new Promise<"expired">((resolve) => {
        timer = setTimeout(() => resolve("expired"), wait);
      });
      // One read at a time: a read still pending when a timer fired is awaited again.
      pending ??= reader.read();
      let result: ReadableStreamReadResult<Uint8Array<ArrayBuffer>> | "expired";
      try {
        result = await Promise.race([pending, expired]);
      } catch {
        throw new ProblemError(400, "malformed_body", "the request body could not be read");
      } finally {
        clearTimeout(timer);
      }
      if (result === "expired") continue; // the loop's check names which deadline passed
      pending = undefined;
      if (result.done) break;
      const chunk = result.value;
      if (chunk.byteLength === 0) continue;
      lastByte = performance.now();
      size += chunk.byteLength;
      if (size > options.maxBytes) throw payloadTooLarge(options.maxBytes);
      if (whole) {
        if (size > whole.byteLength) {
          throw new ProblemError(
            400,
            "malformed_body",
            "the request body exceeds its Content-Length",
          );
        }
        whole.set(chunk, size - chunk.byteLength);
        continue;
      }
      if (options.reserve && !options.reserve(chunk.byteLength)) throw bufferFull();
      // A byte stream hands out views into 64 KiB buffers: keep a trickled byte, not its buffer.
      chunks.push(chunk.byteLength * 2 < chunk.buffer.byteLength ? chunk.slice() : chunk);
    }
  } catch (err) {
    reader.cancel().catch(() => {}); // stop reading from the socket
    throw err;
  }
  if (whole) {
    if (size < whole.byteLength) {
      throw new ProblemError(
        400,
        "malformed_body",
        "the request body is shorter than its Content-Length",
      );
    }
    return whole;
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

/** Options of {@link bodyGuard}. */
export type BodyGuardOptions = Omit<BodyOptions, "maxBytes"> & {
  /** Largest accepted body, or one per request (e.g. by content type). */
  maxBytes: number | ((c: Context) => number);
  /** The isolate's budget of buffered body bytes. */
  budget?: BodyBudget;
};

/**
 * Middleware: refuses a body with a content coding (415), a declared `Content-Length` past the
 * limit (413) or one that doesn't fit the isolate's budget (503 + Retry-After) before reading
 * a byte; then reads it with {@link readBody} and hands it on in memory. The reserved bytes
 * are given back when the request is answered.
 */
export function bodyGuard(options: BodyGuardOptions): MiddlewareHandler {
  return async (c, next) => {
    const raw = c.req.raw;
    if (!raw.body) return await next();
    const refuse = (problem: ProblemError): never => {
      raw.body?.cancel().catch(() => {});
      throw problem;
    };
    const coding = raw.headers.get("content-encoding")?.trim().toLowerCase();
    if (coding && coding !== "identity") refuse(encodedBody(coding));
    const maxBytes = typeof options.maxBytes === "function"
      ? options.maxBytes(c)
      : options.maxBytes;
    const header = raw.headers.get("content-length");
    const length = header === null ? NaN : Number(header);
    const declared = Number.isSafeInteger(length) && length >= 0 ? length : undefined;
    if (declared !== undefined && declared > maxBytes) refuse(payloadTooLarge(maxBytes));
    const budget = options.budget;
    let reserved = 0;
    if (budget && declared !== undefined) {
      if (!budget.reserve(declared)) refuse(bufferFull());
      reserved = declared;
    }
    try {
      const body = await readBody(raw.body, {
        ...options,
        maxBytes,
        declared,
        reserve: budget && declared === undefined
          ? (bytes) => budget.reserve(bytes) && (reserved += bytes, true)
          : undefined,
      });
      c.req.raw = new Request(raw, { body });
      await next();
    } finally {
      budget?.release(reserved);
    }
  };
}
