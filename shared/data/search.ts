/**
 * Bounds shared by the searches (profiles, the recall catalog): a search is cheap by design
 * (few words, capped candidates in SQL, its own short statement timeout, its own share of the
 * pool: see shared/data/db.ts), and a user may run only a few at once.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import type { Config } from "../config.ts";
import type { AsUserOptions } from "./db.ts";
import { concurrencyLimit, type LeaseStore } from "../resilience/lease.ts";
import { ProblemError } from "../http/problem.ts";
import { KeyedSlots } from "../resilience/slots.ts";

/** The distinct words (letters and digits, 2+ characters) of `text`, the first `max` of them. */
export function searchQueryWords(text: string, max: number): string[] {
  const words = text.match(/[\p{L}\p{N}]+/gu) ?? [];
  return [...new Set(words.filter((w) => w.length >= 2))].slice(0, max);
}

/** How searches run in one isolate: `deps.search`. */
export class Search {
  /**
   * How a search uses the database: its own lane of the pool, its own short statement
   * timeout, and a short wait for a connection (100 ms at most, then 503: never a long queue).
   */
  readonly db: AsUserOptions;
  /** This isolate's search slots: they decide at once, whatever Redis does. */
  readonly #isolateSlots = new KeyedSlots();
  readonly #config: Pick<Config, "search" | "requestBudgetMs" | "limits">;
  readonly #leases: LeaseStore;

  constructor(config: Pick<Config, "search" | "requestBudgetMs" | "limits">, leases: LeaseStore) {
    this.#config = config;
    this.#leases = leases;
    this.db = {
      lane: "search",
      statementTimeoutMs: config.search.statementTimeoutMs,
      // A search that can't start soon answers 503 at once: queued searches would only add
      // latency every other request then shares (admission sees it as overload).
      maxWaitMs: Math.min(100, config.search.statementTimeoutMs),
    };
  }

  /**
   * Route middleware capping a user's searches in flight at `SEARCH_CONCURRENCY_PER_USER`:
   * in this isolate (a count, always decides) and across isolates (Redis leases; when Redis
   * can't answer in time that check is skipped, and the isolate's cap still holds). Over the
   * cap: 429 with Retry-After.
   */
  concurrency(key: (c: Context) => string): MiddlewareHandler[] {
    const common = {
      name: "search",
      limit: this.#config.search.concurrencyPerUser,
      ttlMs: this.#config.requestBudgetMs + 1_000,
      key,
      failOpen: true,
      decisionMs: this.#config.limits.decisionMs,
    };
    return [
      concurrencyLimit({ ...common, store: this.#isolateSlots }),
      concurrencyLimit({ ...common, store: this.#leases }),
    ];
  }

  /**
   * Turns a search's statement timeout (SQLSTATE 57014) into 503 with Retry-After: the
   * database was too busy for a search right now; anything else is rethrown.
   */
  timeout(err: unknown): never {
    if ((err as { code?: string })?.code === "57014") {
      throw new ProblemError(
        503,
        "unavailable",
        `the search took longer than ${this.#config.search.statementTimeoutMs} ms; retry shortly`,
        { headers: { "retry-after": "1" }, cause: err },
      );
    }
    throw err;
  }
}
