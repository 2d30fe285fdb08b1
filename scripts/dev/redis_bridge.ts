/**
 * Upstash REST bridge: an HTTP server that speaks the Upstash REST protocol in front of a real
 * Redis, so production code using `@upstash/redis` / `@upstash/ratelimit` runs unchanged against
 * a local or CI Redis.
 *
 * Hand-written here is only what no library does: the protocol translation (routes, auth, JSON
 * envelopes, `Upstash-Encoding: base64`, the ratelimit script-shebang fix-up). RESP, connection
 * management and pipelining are ioredis; HTTP is `Deno.serve`.
 *
 * Run: `UPSTASH_REDIS_REST_TOKEN=secret deno run -A scripts/dev/redis_bridge.ts`
 * (env: `REDIS_URL`, default redis://127.0.0.1:6379; `BRIDGE_PORT`, default 8079;
 * `BRIDGE_DELAY_MS`, default 0: hold every answer that long, to play a slow Redis).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { Command, Pipeline, Redis, ReplyError } from "ioredis";

/** Options for {@link startRedisBridge}. */
export interface RedisBridgeOptions {
  /** Redis to forward to, e.g. `redis://127.0.0.1:6379`. */
  redisUrl: string;
  /** Bearer token clients must send (`UPSTASH_REDIS_REST_TOKEN`). */
  token: string;
  /** HTTP port; `0` (the default) picks an ephemeral port. */
  port?: number;
  /** HTTP interface, default `127.0.0.1`. */
  hostname?: string;
  /**
   * Milliseconds Redis may stay silent while replies are pending before the socket is declared
   * dead (default 2000): the backstop for a Redis that stops answering without closing the
   * connection. A Redis that dies outright is detected at once through the socket close.
   * Must exceed the slowest legitimate command (e.g. a long Lua script).
   */
  socketTimeoutMs?: number;
  /**
   * Milliseconds every Upstash request waits before it is forwarded (default 0): a slow Redis
   * or a slow link to it, for tests and drills (`BRIDGE_DELAY_MS`). Changeable later through
   * {@link RedisBridge.delayMs}.
   */
  delayMs?: number;
}

/** A running bridge, returned by {@link startRedisBridge}. */
export interface RedisBridge {
  /** Base URL to pass as `UPSTASH_REDIS_REST_URL`, e.g. `http://127.0.0.1:8079`. */
  url: string;
  /** The bearer token the bridge accepts. */
  token: string;
  /** Stops the HTTP server and closes both Redis connections. */
  close(): Promise<void>;
  /** Live counters; `requests` counts HTTP requests received (tests count round trips with it). */
  stats: { requests: number };
  /** The current answer delay in ms (see {@link RedisBridgeOptions.delayMs}); settable. */
  delayMs: number;
}

// ---------------------------------------------------------------------------------------------
// Script shebang fix-up
// ---------------------------------------------------------------------------------------------

/**
 * `@upstash/ratelimit` >= 2.1 prefixes its Lua with `#!lua flags=allow-key-locking`, an
 * Upstash-only flag that stock Redis rejects ("Unexpected flag in script shebang"). We strip it
 * before the script reaches Redis. The client addresses scripts by sha1 of the ORIGINAL text, so
 * we remember original sha -> stripped sha and translate EVALSHA / SCRIPT EXISTS; otherwise every
 * warm `limit()` would cost EVALSHA -> NOSCRIPT -> EVAL (two round trips instead of one).
 */
const UPSTASH_ONLY_FLAGS = new Set(["allow-key-locking"]);

/** Upper bound on remembered scripts, so a client generating scripts cannot grow memory forever. */
const MAX_SCRIPTS = 10_000;

interface ScriptRewrite {
  stripped: string;
  originalSha: string;
  strippedSha: string;
}

function sha1(text: string): string {
  return createHash("sha1").update(text).digest("hex");
}

/** Returns the script without Upstash-only shebang flags, or `null` if nothing had to change. */
export function stripUpstashFlags(script: string): string | null {
  if (!script.startsWith("#!")) return null;
  const eol = script.indexOf("\n");
  const line = eol === -1 ? script : script.slice(0, eol);
  const parts = line.split(/\s+/).filter((p) => p !== "");
  let changed = false;
  const kept: string[] = [];
  for (const part of parts) {
    if (!part.startsWith("flags=")) {
      kept.push(part);
      continue;
    }
    const flags = part.slice(6).split(",").filter((f) => f !== "");
    const remaining = flags.filter((f) => !UPSTASH_ONLY_FLAGS.has(f));
    if (remaining.length !== flags.length) changed = true;
    // Keep an explicit (possibly empty) flag set out of the line when nothing is left: a bare
    // `#!lua` keeps shebang semantics and, unlike dropping the line, keeps Lua line numbers intact.
    if (remaining.length > 0) kept.push(`flags=${remaining.join(",")}`);
  }
  if (!changed) return null;
  return kept.join(" ") + (eol === -1 ? "" : script.slice(eol));
}

class ScriptRegistry {
  /** script text -> rewrite (or null when the script needs no rewrite). */
  #byText = new Map<string, ScriptRewrite | null>();
  /** original sha -> stripped sha. */
  #shaMap = new Map<string, string>();

  /** Rewrites a script for EVAL / SCRIPT LOAD and records the sha translation. */
  rewrite(script: string): ScriptRewrite | null {
    let hit = this.#byText.get(script);
    if (hit === undefined) {
      const stripped = stripUpstashFlags(script);
      hit = stripped === null
        ? null
        : { stripped, originalSha: sha1(script), strippedSha: sha1(stripped) };
      if (this.#byText.size >= MAX_SCRIPTS) this.#byText.clear();
      this.#byText.set(script, hit);
    }
    if (hit !== null) {
      if (this.#shaMap.size >= MAX_SCRIPTS) this.#shaMap.clear();
      // Re-set on every EVAL: after a SCRIPT FLUSH or a map reset the client's NOSCRIPT -> EVAL
      // fallback lands here and restores the translation.
      this.#shaMap.set(hit.originalSha, hit.strippedSha);
    }
    return hit;
  }

  /** Translates a sha the client computed from an original script; unknown shas pass through. */
  translate(sha: string): string {
    return this.#shaMap.get(sha.toLowerCase()) ?? sha;
  }
}

// ---------------------------------------------------------------------------------------------
// Command translation
// ---------------------------------------------------------------------------------------------

/**
 * Commands refused because they would change the state of the shared connection (db, protocol,
 * subscriber/monitor mode, reply mode, transaction) or block it for every other client.
 * MULTI/EXEC are served by the /multi-exec route instead.
 */
const REFUSED = new Set([
  "AUTH",
  "HELLO",
  "SELECT",
  "QUIT",
  "RESET",
  "CLIENT",
  "MONITOR",
  "SUBSCRIBE",
  "PSUBSCRIBE",
  "SSUBSCRIBE",
  "UNSUBSCRIBE",
  "PUNSUBSCRIBE",
  "SUNSUBSCRIBE",
  "MULTI",
  "EXEC",
  "DISCARD",
  "WATCH",
  "UNWATCH",
  "BLPOP",
  "BRPOP",
  "BRPOPLPUSH",
  "BLMOVE",
  "BLMPOP",
  "BZPOPMIN",
  "BZPOPMAX",
  "BZMPOP",
  "WAIT",
  "WAITAOF",
]);

/** A request-level failure that maps to an HTTP status (validation, refused command). */
class BridgeError extends Error {
  constructor(message: string, readonly status = 400) {
    super(message);
  }
}

function toArg(value: unknown): string {
  // The REST API takes JSON scalars; Redis only knows strings.
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") {
    return String(value);
  }
  return JSON.stringify(value);
}

/**
 * Builds the ioredis Command for one REST command array.
 *
 * The name is upper-cased on purpose: ioredis keys its reply transformers by lower-case name
 * (e.g. `hgetall` -> object, `zrange ... withscores` pairs), and the bridge must return raw
 * RESP2 shapes. `replyEncoding: null` keeps bulk strings as Buffers so base64 is binary-exact.
 */
function toCommand(raw: unknown, scripts: ScriptRegistry): Command {
  if (!Array.isArray(raw) || raw.length === 0) {
    throw new BridgeError("ERR command must be a non-empty JSON array");
  }
  const name = toArg(raw[0]).toUpperCase();
  if (REFUSED.has(name)) {
    throw new BridgeError(
      `ERR command '${name}' is not supported by the REST bridge`,
    );
  }
  const args: string[] = new Array(raw.length - 1);
  for (let i = 1; i < raw.length; i++) args[i - 1] = toArg(raw[i]);

  switch (name) {
    case "EVAL":
    case "EVAL_RO": {
      const rewrite = args.length > 0 ? scripts.rewrite(args[0]) : null;
      if (rewrite) args[0] = rewrite.stripped;
      break;
    }
    case "EVALSHA":
    case "EVALSHA_RO":
      // If Redis lost the stripped script it answers NOSCRIPT, which we pass back unchanged so
      // the client falls back to EVAL (which re-registers the translation).
      if (args.length > 0) args[0] = scripts.translate(args[0]);
      break;
    case "SCRIPT": {
      const sub = (args[0] ?? "").toUpperCase();
      if (sub === "LOAD" && args.length > 1) {
        const rewrite = scripts.rewrite(args[1]);
        if (rewrite) {
          args[1] = rewrite.stripped;
          // Redis answers with the stripped sha; the client expects the sha of what it sent.
          return wrapReply(
            new Command(name, args, { replyEncoding: null }),
            rewrite.originalSha,
          );
        }
      } else if (sub === "EXISTS") {
        for (let i = 1; i < args.length; i++) {
          args[i] = scripts.translate(args[i]);
        }
      }
      break;
    }
  }
  return new Command(name, args, { replyEncoding: null });
}

/** Makes a successful reply of `cmd` resolve to `value` instead (SCRIPT LOAD sha fix-up). */
function wrapReply(cmd: Command, value: string): Command {
  const resolve = cmd.resolve;
  cmd.resolve = () => resolve(Buffer.from(value));
  // Inside MULTI the real reply arrives in EXEC's array, not through this command.
  execOverrides.set(cmd, value);
  return cmd;
}

/** Reply substitutions to apply to a command's slot in an EXEC reply (see {@link wrapReply}). */
const execOverrides = new WeakMap<Command, string>();

// ---------------------------------------------------------------------------------------------
// Reply encoding
// ---------------------------------------------------------------------------------------------

function isOkBuffer(b: Uint8Array): boolean {
  return b.length === 2 && b[0] === 0x4f && b[1] === 0x4b;
}

/**
 * Converts an ioredis RESP2 reply to JSON. With base64, every bulk/status string (recursively)
 * is base64; integers and nil stay as they are. The client (`@upstash/redis` 1.39 `decode`)
 * base64-decodes every string except a TOP-LEVEL literal "OK", so only there may "OK" be sent
 * raw (matching Upstash); inside arrays "OK" would be decoded as base64 and must be encoded.
 */
function encodeReply(
  value: unknown,
  base64: boolean,
  topLevel: boolean,
): unknown {
  if (value instanceof Uint8Array) {
    const buf = value as Buffer;
    if (!base64) return buf.toString("utf8");
    return topLevel && isOkBuffer(buf) ? "OK" : buf.toString("base64");
  }
  if (Array.isArray(value)) {
    const out = new Array(value.length);
    for (let i = 0; i < value.length; i++) {
      out[i] = encodeReply(value[i], base64, false);
    }
    return out;
  }
  if (typeof value === "string") {
    if (!base64 || (topLevel && value === "OK")) return value;
    return Buffer.from(value).toString("base64");
  }
  // A nested error (e.g. a Lua table containing an error reply): surface its text as a string.
  if (value instanceof Error) {
    return encodeReply(value.message, base64, topLevel);
  }
  return value; // number | null
}

/** A Redis reply error (bad command, WRONGTYPE, NOSCRIPT, ...) as opposed to a connection failure. */
function isReplyError(err: unknown): err is Error {
  return err instanceof ReplyError;
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

const JSON_HEADERS = { "content-type": "application/json" };

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: JSON_HEADERS });
}

/** Maps a thrown error to the HTTP answer: reply errors 400, Redis unreachable 503. */
function errorResponse(err: unknown): Response {
  if (err instanceof BridgeError) {
    return json({ error: err.message }, err.status);
  }
  if (isReplyError(err)) return json({ error: err.message }, 400);
  const message = err instanceof Error ? err.message : String(err);
  return json({ error: `Redis unavailable: ${message}` }, 503);
}

function createRedis(url: string, socketTimeout: number): Redis {
  return new Redis(url, {
    lazyConnect: true,
    // Upstash has RESP2 semantics (flat HGETALL, doubles as strings, Lua true -> 1); ioredis 6
    // defaults to RESP3.
    protocol: 2,
    connectTimeout: 1000,
    // One timer per socket rather than per command (ioredis' commandTimeout): on silence the
    // socket is destroyed, every in-flight command fails and reconnecting starts.
    socketTimeout,
    // Fail fast while Redis is away instead of queueing: callers' fail-open/closed logic needs
    // an error, not a hang.
    enableOfflineQueue: false,
    // Reject in-flight commands as soon as the socket closes, and never replay them (a replayed
    // INCR/EVAL would apply twice).
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    retryStrategy: (times) => Math.min(times * 100, 1000),
    // No per-command stack capture: it is costly in the hot path and the stack is never shown.
    showFriendlyErrorStack: false,
  });
}

async function closeRedis(redis: Redis): Promise<void> {
  // Between reconnect attempts there is no socket: disconnect() only cancels the retry timer and
  // no "end" event will come, so waiting for it would hang.
  if (redis.status === "reconnecting" || redis.status === "close") {
    redis.disconnect();
    return;
  }
  if (redis.status === "end") return;
  const ended = new Promise<void>((resolve) => redis.once("end", () => resolve()));
  redis.disconnect();
  await ended;
}

/**
 * Starts the bridge: connects to Redis (two connections: a shared pipelined one and a dedicated
 * one for MULTI/EXEC) and serves the Upstash REST protocol.
 *
 * If Redis is not reachable at start the bridge still starts and answers 503 until it is.
 *
 * @example
 * ```ts
 * const bridge = await startRedisBridge({ redisUrl: "redis://127.0.0.1:6379", token: "t" });
 * const redis = new Redis({ url: bridge.url, token: bridge.token }); // @upstash/redis
 * await bridge.close();
 * ```
 */
export async function startRedisBridge(
  opts: RedisBridgeOptions,
): Promise<RedisBridge> {
  const socketTimeout = opts.socketTimeoutMs ?? 2000;
  const shared = createRedis(opts.redisUrl, socketTimeout);
  // MULTI...EXEC goes through its own connection so a transaction never shares a connection
  // with pipelined traffic; ioredis writes each MULTI..EXEC batch in one write, so concurrent
  // transactions on this connection do not interleave with each other either.
  const tx = createRedis(opts.redisUrl, socketTimeout);
  const swallow = () => {}; // errors surface per command; an unhandled 'error' event would crash
  shared.on("error", swallow);
  tx.on("error", swallow);
  await Promise.all([
    shared.connect().catch(swallow),
    tx.connect().catch(swallow),
  ]);

  const scripts = new ScriptRegistry();
  const stats = { requests: 0 };
  let delayMs = validDelay(opts.delayMs ?? 0);
  /** Requests waiting out `delayMs`; closing lets them through at once (see `close`). */
  const delayed = new Set<() => void>();
  let closing: Promise<void> | undefined;
  const delay = (ms: number) =>
    new Promise<void>((resolve) => {
      const release = () => {
        clearTimeout(timer);
        delayed.delete(release);
        resolve();
      };
      const timer = setTimeout(release, ms);
      delayed.add(release);
    });
  const expectedAuth = `Bearer ${opts.token}`;

  async function single(raw: unknown, base64: boolean): Promise<Response> {
    const cmd = toCommand(raw, scripts);
    const result = await shared.sendCommand(cmd);
    return json({ result: encodeReply(result, base64, true) });
  }

  async function pipeline(body: unknown, base64: boolean): Promise<Response> {
    if (!Array.isArray(body)) {
      throw new BridgeError("ERR pipeline body must be a JSON array");
    }
    // Validation errors (bad shape, refused command) are per entry, like Redis errors.
    const out: unknown[] = new Array(body.length);
    const p = new Pipeline(shared);
    const slots: number[] = [];
    for (let i = 0; i < body.length; i++) {
      try {
        p.sendCommand(toCommand(body[i], scripts));
        slots.push(i);
      } catch (err) {
        out[i] = { error: (err as Error).message };
      }
    }
    const results = slots.length > 0 ? (await p.exec()) ?? [] : [];
    for (let j = 0; j < results.length; j++) {
      const [err, value] = results[j];
      if (err && !isReplyError(err)) throw err; // connection trouble -> 503 for the batch
      out[slots[j]] = err ? { error: err.message } : { result: encodeReply(value, base64, true) };
    }
    return json(out);
  }

  async function multiExec(body: unknown, base64: boolean): Promise<Response> {
    if (!Array.isArray(body)) {
      throw new BridgeError("ERR multi-exec body must be a JSON array");
    }
    const cmds = body.map((raw) => toCommand(raw, scripts)); // refuse before anything is sent
    const p = new Pipeline(tx);
    p.sendCommand(new Command("MULTI", [], { replyEncoding: null }));
    for (const cmd of cmds) p.sendCommand(cmd);
    p.sendCommand(new Command("EXEC", [], { replyEncoding: null }));
    const results = (await p.exec()) ?? [];
    for (const [err] of results) {
      if (err && !isReplyError(err)) throw err;
    }
    // A queue-time error (unknown command, wrong arity) aborts the whole transaction: report the
    // first such error, which is more useful than the EXECABORT that follows it.
    for (let i = 1; i < results.length; i++) {
      if (results[i][0]) throw results[i][0];
    }
    const execReply = results[results.length - 1][1];
    if (!Array.isArray(execReply)) {
      throw new BridgeError("ERR transaction aborted");
    }
    return json(
      execReply.map((value, i) => {
        if (value instanceof Error) return { error: value.message };
        const override = execOverrides.get(cmds[i]);
        return { result: encodeReply(override ?? value, base64, true) };
      }),
    );
  }

  async function handler(req: Request): Promise<Response> {
    if (req.headers.get("authorization") !== expectedAuth) {
      stats.requests++;
      return json({ error: "Unauthorized" }, 401);
    }
    const base64 = req.headers.get("upstash-encoding")?.toLowerCase() === "base64";
    const path = new URL(req.url).pathname;
    // Not Upstash protocol: lets benchmarks count the round trips of a bridge in another process.
    if (req.method === "GET" && path === "/__bridge/stats") return json({ ...stats }, 200);
    stats.requests++;
    if (delayMs > 0 && !closing) await delay(delayMs);
    try {
      if (
        req.method === "POST" &&
        (path === "/" || path === "/pipeline" || path === "/multi-exec")
      ) {
        let body: unknown;
        try {
          body = await req.json();
        } catch {
          throw new BridgeError("ERR failed to parse JSON body");
        }
        if (path === "/") return await single(body, base64);
        if (path === "/pipeline") return await pipeline(body, base64);
        return await multiExec(body, base64);
      }
      if ((req.method === "GET" || req.method === "POST") && path.length > 1) {
        // Path form `/<cmd>/<arg>/...`; a POST body is appended as the last argument.
        const parts = path.slice(1).split("/").map(decodeURIComponent);
        if (req.method === "POST") {
          const text = await req.text();
          if (text !== "") parts.push(text);
        }
        return await single(parts, base64);
      }
      return json({ error: "ERR unsupported request" }, 400);
    } catch (err) {
      return errorResponse(err);
    }
  }

  const listening = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    port: opts.port ?? 0,
    hostname: opts.hostname ?? "127.0.0.1",
    onListen: (addr) => listening.resolve(addr as Deno.NetAddr),
  }, handler);
  const addr = await listening.promise;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;

  return {
    url: `http://${host}:${addr.port}`,
    token: opts.token,
    stats,
    get delayMs() {
      return delayMs;
    },
    set delayMs(ms: number) {
      delayMs = validDelay(ms);
    },
    close() {
      closing ??= (async () => {
        // Shutting down waits for every request in flight: the simulated latency of those still
        // held would only hold up the caller's teardown (up to a whole `delayMs`).
        for (const release of [...delayed]) release();
        await server.shutdown();
        await Promise.all([closeRedis(shared), closeRedis(tx)]);
      })();
      return closing;
    },
  };
}

function validDelay(ms: number): number {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`delayMs must be >= 0, got ${ms}`);
  return ms;
}

if (import.meta.main) {
  const token = Deno.env.get("UPSTASH_REDIS_REST_TOKEN");
  if (!token) {
    console.error("UPSTASH_REDIS_REST_TOKEN is required");
    Deno.exit(2);
  }
  const bridge = await startRedisBridge({
    redisUrl: Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379",
    token,
    port: Number(Deno.env.get("BRIDGE_PORT") ?? Deno.env.get("PORT") ?? 8079),
    delayMs: Number(Deno.env.get("BRIDGE_DELAY_MS") ?? 0),
  });
  console.log(bridge.url);
  const stop = async () => {
    await bridge.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
