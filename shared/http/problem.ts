/**
 * RFC 9457 problem details: the one error shape every function answers with.
 *
 * @module
 */
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";

/** Stable machine-readable codes, one per kind of problem. */
export type ProblemCode =
  | "invalid_parameter"
  | "malformed_body"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "method_not_allowed"
  | "conflict"
  | "payload_too_large"
  | "unsupported_media_type"
  | "rate_limited"
  | "internal"
  | "unavailable"
  | "timeout"
  | "request_timeout";

const titles: Record<ProblemCode, string> = {
  invalid_parameter: "Invalid parameter",
  malformed_body: "Malformed request body",
  unauthorized: "Unauthorized",
  forbidden: "Forbidden",
  not_found: "Not found",
  method_not_allowed: "Method not allowed",
  conflict: "Conflict",
  payload_too_large: "Payload too large",
  unsupported_media_type: "Unsupported media type",
  rate_limited: "Too many requests",
  internal: "Internal error",
  unavailable: "Service unavailable",
  timeout: "Request took too long",
  request_timeout: "Request body timeout",
};

/** An invalid field, as in RFC 9457's `invalid-params` example. */
export interface InvalidParam {
  name: string;
  reason: string;
}

/** Thrown anywhere in a request; the app's error handler turns it into problem+json. */
export class ProblemError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: ProblemCode,
    readonly detail: string,
    readonly options: {
      headers?: Record<string, string>;
      extensions?: Record<string, unknown>;
      cause?: unknown;
    } = {},
  ) {
    super(detail, { cause: options.cause });
    this.name = "ProblemError";
  }
}

/** 400 naming the offending parameter. */
export function invalidParameter(name: string, reason: string): ProblemError {
  return new ProblemError(400, "invalid_parameter", `${name}: ${reason}`, {
    extensions: { invalid_params: [{ name, reason }] },
  });
}

/** 404 that never reveals whether something exists for somebody else. */
export function notFound(what = "resource"): ProblemError {
  return new ProblemError(404, "not_found", `${what} not found`);
}

const httpCodes: Partial<Record<number, ProblemCode>> = {
  400: "malformed_body",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  408: "request_timeout",
  409: "conflict",
  413: "payload_too_large",
  415: "unsupported_media_type",
  429: "rate_limited",
  503: "unavailable",
  504: "timeout",
};

/** Maps anything thrown to a ProblemError; unknown errors become an opaque 500. */
export function toProblem(err: unknown): ProblemError {
  if (err instanceof ProblemError) return err;
  if (err instanceof HTTPException) {
    const status = err.status as ContentfulStatusCode;
    const code = httpCodes[status] ?? (status >= 500 ? "internal" : "malformed_body");
    // The OpenAPI validator's 415 names no type; every body it validates is JSON.
    const detail = status === 415
      ? "unsupported Content-Type: send the body as application/json"
      : err.message || titles[code];
    return new ProblemError(status, code, detail, { cause: err });
  }
  const e = err as { code?: string; name?: string; message?: string };
  // Database refusals are answered with a fixed detail: the server's message names tables,
  // constraints and encodings, which are nobody's business outside (it is in `cause`).
  const sqlstate = /^2[23][0-9A-Z]{3}$/.test(e?.code ?? "") ? e.code! : null;
  // SQLSTATE class 22 (data exception): the database refused a value we passed on from the
  // request (a NUL byte, an out-of-range number…). That is bad input, not a server fault.
  if (sqlstate?.startsWith("22")) {
    return new ProblemError(400, "invalid_parameter", "a value in the request is not valid", {
      cause: err,
    });
  }
  // Class 23 (integrity constraint violation): a rule of the data refused the request (a check
  // such as "nobody follows themselves", a duplicate, a missing row it refers to). Routes map
  // the ones they expect to precise answers; any other is still the caller's, never a 500.
  if (sqlstate && checkViolations.has(sqlstate)) {
    return new ProblemError(400, "invalid_parameter", "the request breaks a rule of the data", {
      cause: err,
    });
  }
  if (sqlstate) {
    return new ProblemError(409, "conflict", "the request conflicts with the current data", {
      cause: err,
    });
  }
  if (e?.code === "57014" || e?.name === "TimeoutError") {
    return new ProblemError(504, "timeout", "a dependency did not answer in time", { cause: err });
  }
  if (unavailableCodes.has(e?.code ?? "")) {
    return new ProblemError(503, "unavailable", "the database is unavailable, retry shortly", {
      cause: err,
      headers: { "retry-after": "1" },
    });
  }
  return new ProblemError(500, "internal", "an unexpected error occurred", { cause: err });
}

/** Class 23 codes that refuse a value itself, not its relation to other rows: a 400. */
const checkViolations = new Set([
  "23502", // not_null_violation
  "23514", // check_violation
]);

/** Postgres / postgres.js codes that mean "not now" rather than "broken". */
const unavailableCodes = new Set([
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECTION_ENDED",
  "ECONNREFUSED",
  "53300", // too_many_connections
  "57P01", // admin_shutdown
  "57P03", // cannot_connect_now
]);

/** The RFC 9457 body of a problem. */
export function problemBody(problem: ProblemError, requestId: string | null) {
  return {
    type: `urn:problem:rockout:${problem.code}`,
    title: titles[problem.code],
    status: problem.status,
    detail: problem.detail,
    code: problem.code,
    request_id: requestId,
    ...problem.options.extensions,
  };
}

/** Renders a problem as an `application/problem+json` response. */
export function problemResponse(c: Context, problem: ProblemError): Response {
  const body = problemBody(problem, c.get("requestId") ?? null);
  for (const [k, v] of Object.entries(problem.options.headers ?? {})) c.header(k, v);
  c.header("content-type", "application/problem+json");
  return c.body(JSON.stringify(body), problem.status);
}
