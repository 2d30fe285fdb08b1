/**
 * What a scenario's iteration uses: an HTTP client that records `http_req_duration` (time to
 * the whole body), `http_req_failed` and `http_reqs` per request name, and `check()`.
 *
 * @module
 */
import type { Registry } from "./stats.ts";

/** A finished request. */
export interface LoadResponse {
  status: number;
  headers: Headers;
  body: string;
  durationMs: number;
  /** The body parsed as JSON (throws when it isn't). */
  json<T = unknown>(): T;
}

/** Options of one request. */
export interface RequestOptions {
  headers?: Record<string, string>;
  body?: string;
  /** Groups the metrics (`http_req_duration{name:<name>}`). */
  name?: string;
  /** Statuses that are not failures (default: < 400). */
  expected?: number[];
  timeoutMs?: number;
}

/** The per-run HTTP client and checks. */
export class LoadClient {
  constructor(readonly baseUrl: string, readonly metrics: Registry) {}

  /** Makes one request; network errors come back as status 0. */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<LoadResponse> {
    const name = options.name ?? `${method} ${path.split("?")[0]}`;
    const start = performance.now();
    let status = 0;
    let headers = new Headers();
    let body = "";
    try {
      const res = await fetch(this.baseUrl + path, {
        method,
        headers: options.headers,
        body: options.body,
        signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
      });
      status = res.status;
      headers = res.headers;
      body = await res.text();
    } catch {
      status = 0;
    }
    const durationMs = performance.now() - start;
    const failed = status === 0 ||
      (options.expected ? !options.expected.includes(status) : status >= 400);
    const m = this.metrics;
    for (const key of ["", `{name:${name}}`]) {
      m.trend(`http_req_duration${key}`).add(durationMs);
      m.rate(`http_req_failed${key}`).add(failed);
      m.counter(`http_reqs${key}`).add();
    }
    m.counter(`status_${status}`).add();
    return { status, headers, body, durationMs, json: <T>() => JSON.parse(body) as T };
  }

  get(path: string, options?: RequestOptions): Promise<LoadResponse> {
    return this.request("GET", path, options);
  }

  post(path: string, json: unknown, options: RequestOptions = {}): Promise<LoadResponse> {
    return this.request("POST", path, {
      ...options,
      body: JSON.stringify(json),
      headers: { "content-type": "application/json", ...options.headers },
    });
  }

  /** Records each named check in `checks` and `checks{name:<name>}`; true when all pass. */
  check<T>(value: T, checks: Record<string, (v: T) => boolean>): boolean {
    let all = true;
    for (const [name, fn] of Object.entries(checks)) {
      let ok = false;
      try {
        ok = fn(value);
      } catch {
        ok = false;
      }
      this.metrics.rate("checks").add(ok);
      this.metrics.rate(`checks{name:${name}}`).add(ok);
      all &&= ok;
    }
    return all;
  }
}
