/**
 * Work that outlives the response (cache refreshes, summary regeneration). On Supabase it
 * must be handed to `EdgeRuntime.waitUntil` or the isolate may be dropped before it ends;
 * elsewhere (the local gateway, tests) the promise simply runs on.
 *
 * @module
 */

declare const EdgeRuntime: { waitUntil(promise: Promise<unknown>): void } | undefined;

const pending = new Set<Promise<unknown>>();

/** Runs `work` after the response; failures are logged, never thrown. */
export function runInBackground(name: string, work: Promise<unknown>): void {
  const guarded = work.catch((err) =>
    console.error(JSON.stringify({ msg: "background task failed", task: name, error: String(err) }))
  ).finally(() => pending.delete(guarded));
  pending.add(guarded);
  if (typeof EdgeRuntime !== "undefined") EdgeRuntime.waitUntil(guarded);
}

/** Resolves when every background task started so far has settled (tests, shutdown). */
export async function settleBackground(): Promise<void> {
  while (pending.size) await Promise.all([...pending]);
}
