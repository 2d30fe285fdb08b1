/**
 * Public profiles through the two-tier cache, one entry per profile (tag `profile:<id>`), and
 * the batch read that loads whatever a request's cache misses in one query.
 *
 * @module
 */
import { runInBackground } from "../../shared/http/background.ts";
import type { Budget } from "../../shared/http/budget.ts";
import type { TwoTierCache } from "../../shared/resilience/cache.ts";
import type { Database } from "../../shared/data/db.ts";
import { notFound, ProblemError } from "../../shared/http/problem.ts";
import { delay } from "../../shared/resilience/abort.ts";
import * as queries from "./queries.ts";

/** A public profile, as every endpoint answers it. */
export interface Profile {
  id: string;
  username: string;
  display_name: string | null;
  avatar_url: string | null;
  bio: string | null;
  follower_count: number;
  following_count: number;
  created_at: string;
}

/** Normalises a profile row (postgres.js gives Dates). */
export function toProfile(row: Record<string, unknown>): Profile {
  return {
    id: row.id as string,
    username: row.username as string,
    display_name: (row.display_name ?? null) as string | null,
    avatar_url: (row.avatar_url ?? null) as string | null,
    bio: (row.bio ?? null) as string | null,
    follower_count: Number(row.follower_count),
    following_count: Number(row.following_count),
    created_at: new Date(row.created_at as string).toISOString(),
  };
}

/** The tag that invalidates every cached copy of a profile. */
export const profileTag = (id: string): string => `profile:${id}`;
const profileKey = (id: string) => `profiles:v1:${id}`;

/** How long after a write a read that started before it may still store the old row. */
const lateLoadMs = 2000;

/**
 * The profiles of one isolate: read through `cache` (each fresh for `ttlS`), loaded from `db`.
 * Built once by the app.
 */
export class ProfileCache {
  readonly #cache: TwoTierCache;
  readonly #db: Database;
  readonly #ttlS: number;

  constructor(options: { cache: TwoTierCache; db: Database; ttlS: number }) {
    this.#cache = options.cache;
    this.#db = options.db;
    this.#ttlS = options.ttlS;
  }

  /**
   * Drops a profile from every cache tier of every isolate (call it after the write
   * committed). A read that loaded the old row just before the write could store it right
   * after this invalidation, so a second one follows in the background once such loads are
   * over.
   */
  async invalidate(id: string): Promise<void> {
    await this.#cache.invalidateTag(profileTag(id));
    runInBackground(
      `profile invalidation ${id}`,
      delay(lateLoadMs).then(() => this.#cache.invalidateTag(profileTag(id))),
    );
  }

  /**
   * Profiles by id, in the order asked, unknown ids left out. Read through the cache together
   * (one sync and one MGET for the lot, so a warm read costs one Redis command whatever the
   * number of ids); the misses of one call are loaded together by one statement.
   */
  async get(ids: string[], budget?: Budget): Promise<Profile[]> {
    const batch = new MissBatch(ids.length, (missing) => this.#load(missing, budget));
    const loadedHere = ids.map(() => false);
    const reads = this.#cache.getMany(
      ids.map(profileKey),
      (_, i) => ({ ttlS: this.#ttlS, tags: [profileTag(ids[i])] }),
      (_, i) => {
        loadedHere[i] = true;
        return batch.load(ids[i]);
      },
    );
    const found = await Promise.all(reads.map(async (read, i) => {
      try {
        return await read;
      } catch (err) {
        // A miss: answered without the id (never cached, so a new profile shows up at once).
        if (err instanceof ProblemError && err.status === 404) return null;
        throw err;
      } finally {
        if (!loadedHere[i]) batch.settledElsewhere();
      }
    }));
    return found.filter((p): p is Profile => p !== null);
  }

  /** One statement for any number of ids (the shared entry must not depend on the caller). */
  async #load(ids: string[], budget?: Budget): Promise<Map<string, Profile>> {
    const rows = await this.#db.asUser(null, (tx) => queries.profilesByIds(tx, ids), budget);
    return new Map(rows.map((row) => [row.id as string, toProfile(row)]));
  }
}

/**
 * Gathers the loads one request's cache misses ask for and runs them as one query: it knows
 * how many ids the request has, so it flushes as soon as each id has either asked to be
 * loaded or been answered otherwise (hit, or joined somebody else's load). A short timer
 * flushes anyway, so two requests waiting on each other's in-flight loads cannot stall.
 */
class MissBatch<T> {
  #pending = new Map<string, PromiseWithResolvers<T>>();
  #accounted = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    readonly expected: number,
    readonly loadMany: (ids: string[]) => Promise<Map<string, T>>,
    readonly maxWaitMs = 10,
  ) {}

  /** Called by the cache on a miss of `id`. */
  load(id: string): Promise<T> {
    const waiter = Promise.withResolvers<T>();
    this.#pending.set(id, waiter);
    this.#accounted++;
    this.#maybeFlush();
    return waiter.promise;
  }

  /** An id was answered without asking this batch. */
  settledElsewhere(): void {
    this.#accounted++;
    this.#maybeFlush();
  }

  #maybeFlush(): void {
    if (!this.#pending.size) return;
    if (this.#accounted >= this.expected) this.#flush();
    else this.#timer ??= setTimeout(() => this.#flush(), this.maxWaitMs);
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const waiters = this.#pending;
    this.#pending = new Map();
    if (!waiters.size) return;
    this.loadMany([...waiters.keys()]).then((found) => {
      for (const [id, w] of waiters) {
        const value = found.get(id);
        if (value === undefined) w.reject(notFound("profile"));
        else w.resolve(value);
      }
    }, (err) => {
      for (const w of waiters.values()) w.reject(err);
    });
  }
}
