/**
 * The cache tags of the `recall` reads, in one place: `recall` tags what it caches with
 * them, and whoever writes a recall thread (`recall-resolve`, the delete in `recall`)
 * invalidates them, so the two sides cannot drift apart.
 *
 * @module
 */
import type { TwoTierCache } from "../resilience/cache.ts";

/** The tag on everything cached about one recall thread (the thread and its messages). */
export function recallThreadTag(threadId: string): string {
  return `recall-thread:${threadId}`;
}

/** The tag on a user's cached list of recall threads (and each thread read through it). */
export function recallThreadsTag(userId: string): string {
  return `recall-threads:${userId}`;
}

/**
 * Drops what the recall reads cached about `threadId` and `userId`'s thread list: call it
 * the moment a thread changes. One round trip. A thread just created (`created`) has nothing
 * cached under its own tag yet (its id is new), so only the list is dropped. Rejects when the
 * invalidation fails; the caller decides whether that fails its request.
 */
export async function invalidateRecallThread(
  cache: Pick<TwoTierCache, "invalidateTags">,
  userId: string,
  threadId: string,
  options: { created?: boolean } = {},
): Promise<void> {
  await cache.invalidateTags([
    ...(options.created ? [] : [recallThreadTag(threadId)]),
    recallThreadsTag(userId),
  ]);
}
