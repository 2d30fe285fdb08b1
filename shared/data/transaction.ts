/**
 * How a database's work (`Database`, db.ts) reaches Postgres: a slot of its {@link PoolGate}
 * first (the wait counts against the request budget and is given up when it runs out or the
 * client leaves), then one transaction as the calling user with `statement_timeout` from what
 * is left of the budget. A statement still running when its request is abandoned is cancelled
 * in the database (a CancelRequest), and the transaction never commits after the deadline.
 *
 * @module
 */
import type postgres from "postgres";
import { outsideAdmission } from "../http/admission.ts";
import type { AuthUser } from "../auth/auth.ts";
import type { Budget } from "../http/budget.ts";
import { ProblemError } from "../http/problem.ts";
import { countCall, timed } from "../http/timing.ts";
import type { Lane, PoolGate, PoolStats } from "./pool_gate.ts";

/** A transaction handle, as postgres.js passes to `begin`. */
export type Tx = postgres.TransactionSql;

/** What the transaction mechanics use of a database (`Database`, db.ts). */
export interface PoolHandle {
  /** The pool. */
  readonly sql: postgres.Sql;
  /** The slots in front of the pool. */
  readonly gate: PoolGate;
  /** Counts since the database was made. */
  readonly stats: PoolStats;
  /** `DB_STATEMENT_TIMEOUT_MS`: no statement runs longer. */
  readonly statementTimeoutMs: number;
}

/**
 * Counts the statements `work` issues in the current request (Server-Timing `db` calls),
 * at the call site: a driver hook would run in whichever request freed the connection.
 * Each statement is also handed to `track`, so an abandoned request can cancel it, and
 * `guard` runs first (it throws when the request was abandoned).
 */
function counting(
  tx: Tx,
  track: (q: postgres.PendingQuery<postgres.Row[]>) => void,
  guard: () => void = () => {},
): Tx {
  return new Proxy(tx, {
    apply(target, self, args) {
      guard(); // throws once the request is abandoned: nothing more is sent
      const result = Reflect.apply(target, self, args);
      if (Array.isArray(args[0]) && "raw" in args[0]) {
        countCall("db");
        track(result);
      }
      return result;
    },
  });
}

/** Options of {@link asUser} (and `Database.asUser`). */
export interface AsUserOptions {
  /** Caps `statement_timeout` below the default (e.g. searches: short by design). */
  statementTimeoutMs?: number;
  /** The pool share to use (default: `default`, which may use every connection). */
  lane?: Lane;
  /**
   * Waits at most this long for a connection (searches: as long as they may run), then
   * answers 503 with Retry-After instead of queueing for the rest of the budget.
   */
  maxWaitMs?: number;
}

/**
 * Runs `work` in one transaction as `user` (`anon` when null), behind a slot of `db`'s gate:
 * what `Database.asUser` (db.ts) does, documented there. Searches (lane `search`) are timed
 * apart and spent outside the request's admission slot.
 */
export function asUser<T>(
  db: PoolHandle,
  user: AuthUser | null,
  work: (tx: Tx) => Promise<T>,
  budget?: Budget,
  options: AsUserOptions = {},
): Promise<T> {
  const run = () => inTransaction(db, user, work, budget, options);
  if ((options.lane ?? "default") === "default") return run();
  // The search lane has bounds of its own: its time (the wait included) is recorded apart and
  // spent outside the request's admission slot, so it neither fills nor shrinks the
  // isolate's limit (see admission.ts, app.ts).
  return timed("searchLane", outsideAdmission(run), 0);
}

async function inTransaction<T>(
  db: PoolHandle,
  user: AuthUser | null,
  work: (tx: Tx) => Promise<T>,
  budget: Budget | undefined,
  options: AsUserOptions,
): Promise<T> {
  const signal = budget?.signal();
  const release = await timed("db", waitForSlot(db, options, signal), 0);
  try {
    const timeoutMs = Math.floor(
      Math.min(
        db.statementTimeoutMs,
        options.statementTimeoutMs ?? Infinity,
        budget?.remaining() ?? Infinity,
      ),
    );
    if (timeoutMs < 1 || signal?.aborted) {
      db.stats.abandonedWaits++;
      throw signal?.reason ?? new DOMException("request budget expired", "TimeoutError");
    }
    const cancels: Promise<unknown>[] = [];
    try {
      const run = transaction(db, user, work, timeoutMs, signal, budget, cancels);
      return await timed("db", run, 0); // statements are counted one by one in `counting`
    } finally {
      // A CancelRequest hits whatever its backend runs when it lands: keep the slot until it
      // has, so it can't cancel a statement of the next request.
      await Promise.allSettled(cancels);
    }
  } finally {
    release();
  }
}

/** Takes a slot of `options.lane`, giving up when `signal` fires or after `maxWaitMs`. */
async function waitForSlot(
  db: PoolHandle,
  options: AsUserOptions,
  signal?: AbortSignal,
): Promise<() => void> {
  const lane = options.lane ?? "default";
  const start = performance.now();
  const granted = (release: () => void) => {
    db.stats.granted[lane]++;
    db.stats.waitMs[lane] += performance.now() - start;
    return release;
  };
  if (options.maxWaitMs === undefined) return granted(await db.gate.acquire(lane, signal));
  const waited = AbortSignal.timeout(options.maxWaitMs);
  try {
    return granted(
      await db.gate.acquire(lane, signal ? AbortSignal.any([signal, waited]) : waited),
    );
  } catch (err) {
    if (!waited.aborted || signal?.aborted) throw err;
    throw new ProblemError(
      503,
      "unavailable",
      `the database is busy (no ${lane} connection within ${options.maxWaitMs} ms); retry shortly`,
      { headers: { "retry-after": "1" } },
    );
  }
}

/** How long to wait for a CancelRequest to be delivered before giving up on it. */
const cancelLandMs = 5000;

/**
 * Sends a CancelRequest for `q` and resolves once it has landed: postgres.js resolves the
 * canceller's promise when the postmaster closes the cancel connection, which it does after
 * signalling the backend. `Query.cancel()` drops that promise, so the canceller is called here.
 */
function cancelAndWait(q: postgres.PendingQuery<postgres.Row[]>): Promise<unknown> {
  const pending = q as unknown as { canceller?: ((q: unknown) => Promise<void>) | null };
  const canceller = pending.canceller;
  if (!canceller) return Promise.resolve();
  pending.canceller = null; // as Query.cancel() does: one cancel per statement
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    canceller(q),
    new Promise((resolve) => (timer = setTimeout(resolve, cancelLandMs))),
  ]).finally(() => clearTimeout(timer));
}

/**
 * The transaction itself. Once the request's budget has expired or its client has left, it
 * never commits:
 * - a statement running then is cancelled (CancelRequest), whichever ended it first, the
 *   cancel or `statement_timeout` (kept as a backstop, set from what was left of the budget
 *   at the start, so a later statement could otherwise outlive the request);
 * - a statement issued after it throws instead of being sent;
 * - once `work` has settled, the deadline is checked again and the callback throws, so
 *   postgres.js sends ROLLBACK, not COMMIT.
 * ROLLBACK (or COMMIT) goes out only after every CancelRequest has landed: while the callback
 * runs, the connection is reserved for this transaction, so a late cancel can only hit a
 * statement of this (failed) transaction, never another request's.
 *
 * Remaining window: a deadline that falls while COMMIT itself is in flight (work finished in
 * time; one round trip, ~1 ms locally). The COMMIT is not cancelled (it may already be
 * durable), so the client can get 504 for a write that landed; likewise if the handler
 * spends past the deadline after `asUser` returned. Writes that a client may retry after a
 * 504 should carry an idempotency key.
 */
function transaction<T>(
  db: PoolHandle,
  user: AuthUser | null,
  work: (tx: Tx) => Promise<T>,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  budget: Budget | undefined,
  cancels: Promise<unknown>[],
): Promise<T> {
  const role = user ? "authenticated" : "anon";
  const claims = JSON.stringify(user ? user.claims : { role: "anon" });
  const expired = () => Boolean(signal?.aborted || (budget && budget.remaining() <= 0));
  const reason = () => signal?.reason ?? new DOMException("request budget expired", "TimeoutError");
  // Every tagged template of this transaction: statements, but also fragments nested in
  // other statements, which must never be awaited or cancelled here (that would run them).
  const issued = new Set<postgres.PendingQuery<postgres.Row[]>>();
  const onAbort = () => {
    for (const q of issued) {
      // Sent to the backend (postgres.js sets `state` then; awaiting such a query can't
      // start it again) and not finished yet.
      if (!(q as unknown as { state?: unknown }).state) continue;
      cancels.push(
        (async () => {
          const done = await Promise.race([
            q.then(() => true, () => true),
            Promise.resolve().then(() => false),
          ]);
          if (done) return;
          db.stats.cancelledStatements++;
          // Both: the cancel delivered (so it can't hit a later statement) and the
          // statement's own end.
          await Promise.allSettled([cancelAndWait(q), q.then(() => {}, () => {})]);
        })().catch(() => {}),
      );
    }
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  return pipelined(db, signal, async (tx) => {
    if (expired()) throw reason();
    const setup = tx`/* as-user */ select set_config('role', ${role}, true),
      set_config('request.jwt.claims', ${claims}, true),
      set_config('statement_timeout', ${String(timeoutMs)}, true)`.execute();
    issued.add(setup);
    const guarded = counting(tx, (q) => issued.add(q), () => {
      if (expired()) throw reason();
    });
    // allSettled: the transaction must not end while a statement of `work` is still pending
    // on this connection.
    const [setupDone, workDone] = await Promise.allSettled([
      setup,
      (async () => await work(guarded))(),
    ]);
    await Promise.allSettled(cancels);
    if (setupDone.status === "rejected") throw setupDone.reason;
    if (workDone.status === "rejected") throw workDone.reason;
    // Never commit after the deadline: the client is being (or has been) told 504.
    if (expired()) throw reason();
    return workDone.value;
  }).finally(() => signal?.removeEventListener("abort", onAbort));
}

/**
 * One transaction on a reserved connection: BEGIN goes out with the first statements of `run`
 * (postgres.js writes what is issued in one tick together), where `sql.begin` awaited BEGIN
 * before sending anything else: one round trip less per transaction. COMMIT is sent once
 * `run` has returned (and checked its deadline), ROLLBACK when it throws.
 *
 * Written by hand rather than with `sql.begin` also for what `begin` gets wrong:
 * - a connection lost mid-transaction: `begin` writes its ROLLBACK to the closed socket,
 *   which throws inside a `setImmediate` and ends the process (porsager/postgres#1208,
 *   #1154); here nothing more is written to it, and it is not released (postgres.js has
 *   already moved it to its closed connections);
 * - a statement error that `run` caught: Postgres answers the COMMIT of a failed transaction
 *   with ROLLBACK, and that is an error here, as it was with `begin`, never a success.
 */
async function pipelined<T>(
  db: PoolHandle,
  signal: AbortSignal | undefined,
  run: (tx: Tx) => Promise<T>,
): Promise<T> {
  const conn = await db.sql.reserve();
  const tx = conn as unknown as Tx;
  let lost = false;
  try {
    const begin = tx`begin`.execute();
    let value: T;
    try {
      value = await settledOrLost(run(tx), signal);
      await begin;
    } catch (err) {
      const beginError = await begin.then(() => null, (e) => e);
      lost = err === lostConnection || connectionLost(err) || connectionLost(beginError);
      // Bounded: a connection that dies as ROLLBACK is queued never answers it.
      if (!lost) lost = !(await landed(tx`rollback`.execute()));
      throw err === lostConnection ? new Error("database connection lost") : err;
    }
    let committed: postgres.RowList<postgres.Row[]>;
    try {
      committed = await tx`commit`.execute();
    } catch (err) {
      lost = connectionLost(err);
      throw err;
    }
    if (committed.command !== "COMMIT") {
      throw new Error(
        `transaction rolled back (${committed.command}): a statement of it failed and the error was caught`,
      );
    }
    return value;
  } finally {
    if (!lost) conn.release();
  }
}

/** What {@link settledOrLost} throws when the work never settles. */
const lostConnection = Symbol("lost connection");

/**
 * `work`, or {@link lostConnection} when it is still pending {@link cancelLandMs} after
 * `signal` aborted. The abort cancels the running statements, which then settle; what doesn't
 * is a statement postgres.js queued on a connection that died meanwhile (it never rejects
 * those), and the slot must not wait for it forever.
 */
function settledOrLost<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  const stuck = new Promise<never>((_, reject) => {
    onAbort = () => (timer = setTimeout(() => reject(lostConnection), cancelLandMs));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([work, stuck]).finally(() => {
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort!);
  });
}

/** Whether `q` settled within {@link cancelLandMs}. */
async function landed(q: Promise<unknown>): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<boolean>((
    resolve,
  ) => (timer = setTimeout(resolve, cancelLandMs, false)));
  try {
    return await Promise.race([q.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Whether `err` says the connection is gone: postgres.js's own codes, or a FATAL error from
 * the server (pg_terminate_backend, a shutdown), after which it closes the connection.
 */
function connectionLost(err: unknown): boolean {
  const e = err as { code?: unknown; severity?: unknown } | null;
  return e?.code === "CONNECTION_CLOSED" || e?.code === "CONNECTION_DESTROYED" ||
    e?.code === "CONNECTION_ENDED" || e?.severity === "FATAL" || e?.severity === "PANIC";
}

/**
 * Runs `q` with the function's own role behind a slot of `db`'s gate (lane `default`):
 * what `Database.query` (db.ts) does. `q` is sent only once the slot is ours; when `signal`
 * aborts, the wait is given up or the running statement cancelled.
 */
export async function query<T extends readonly object[]>(
  db: PoolHandle,
  q: postgres.PendingQuery<T>,
  signal?: AbortSignal,
): Promise<T> {
  const release = await db.gate.acquire("default", signal);
  let cancelled: Promise<unknown> | undefined;
  const cancel = () => {
    db.stats.cancelledStatements++;
    cancelled = cancelAndWait(q as unknown as postgres.PendingQuery<postgres.Row[]>);
  };
  signal?.addEventListener("abort", cancel, { once: true });
  try {
    return await timed("db", q as unknown as Promise<T>);
  } finally {
    signal?.removeEventListener("abort", cancel);
    // Keep the slot until the CancelRequest has landed (it hits whatever its backend runs).
    if (cancelled) await cancelled;
    release();
  }
}
