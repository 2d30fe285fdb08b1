/**
 * Enqueueing AI persona replies for a post: what `POST /posts/:id/generate-replies` does
 * (the route lives in the posts function). The LLM work itself runs later, in the
 * `generate_reply` job handler.
 *
 * @module
 */
import type { AuthUser } from "../auth/auth.ts";
import type { Budget } from "../http/budget.ts";
import type { Database } from "../data/db.ts";
import { invalidParameter, notFound } from "../http/problem.ts";
import type { JobStatus } from "../jobs/queue.ts";

/** Most personas per request. */
export const maxPersonasPerRequest = 5;

/** One persona's job, as the route answers it. */
export interface ReplyJob {
  persona_id: string;
  /** null when the persona already replied (nothing to do). */
  job_id: string | null;
  /** `created` by this call, already `active` (pending, running or awaiting a retry), or `replied`. */
  state: "created" | "active" | "replied";
  status: JobStatus | null;
}

/** The job type of persona replies (run by jobs-worker's `generate_reply` handler). */
export const replyJobType = "generate_reply";

/** The payload of a reply job. */
export interface ReplyPayload {
  post_id: string;
  persona_id: string;
}

/** The job key of a reply job: at most one active job per (post, persona). */
export function replyJobKey(postId: string, personaId: string): string {
  return `${replyJobType}:${postId.toLowerCase()}:${personaId.toLowerCase()}`;
}

/** Per attempt of a reply job: the LLM call gets the worker's 15 s task timeout. */
const replyJobMaxAttempts = 5;
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Enqueues one `generate_reply` job per persona for a post the caller can see (published).
 * Idempotent under races: at most one active job exists per (post, persona) (its job key
 * `generate_reply:<post>:<persona>`, unique among active jobs), so concurrent identical
 * calls all get the same job back; personas that already replied get no job. Throws 404
 * for an unknown or invisible post, 400 naming `persona_ids` for unknown personas or a bad
 * list.
 */
export async function enqueueReplyJobs(
  db: Database,
  user: AuthUser,
  postId: string,
  personaIds: string[],
  budget?: Budget,
): Promise<{ post_id: string; jobs: ReplyJob[] }> {
  if (!uuidPattern.test(postId)) throw notFound("post");
  const wanted = [...new Set(personaIds.map((id) => id.toLowerCase()))];
  const malformed = wanted.find((id) => !uuidPattern.test(id));
  if (malformed !== undefined) throw invalidParameter("persona_ids", `not a uuid: ${malformed}`);
  if (wanted.length < 1 || wanted.length > maxPersonasPerRequest) {
    throw invalidParameter("persona_ids", `1 to ${maxPersonasPerRequest} distinct persona ids`);
  }
  // As the caller, so RLS decides whether the post is visible.
  const [check] = await db.asUser(
    user,
    (tx) =>
      tx<{ post_ok: boolean; known: string[] }[]>`
      select exists (select 1 from public.posts where id = ${postId} and status = 'published')
               as post_ok,
             array(select id::text from public.personas where id = any (${wanted}::uuid[]))
               as known`,
    budget,
  );
  if (!check.post_ok) throw notFound("post");
  const unknown = wanted.filter((id) => !check.known.includes(id));
  if (unknown.length) throw invalidParameter("persona_ids", `unknown persona ${unknown[0]}`);

  const results = new Map<string, ReplyJob>();
  let missing = wanted;
  // A job that finishes between our insert and our lookup leaves either its reply (seen on
  // the next pass) or a dead job (a new one is created then): a few passes settle it.
  for (let pass = 0; pass < 3 && missing.length; pass++) {
    const rows = await db.sql<
      { persona_id: string; job_id: string | null; status: JobStatus | null; created: boolean }[]
    >`
      with replied as (
        select r.persona_id from public.replies r
        where r.post_id = ${postId} and r.persona_id = any (${missing}::uuid[])
      ), inserted as (
        insert into public.jobs (job_type, payload, job_key, max_attempts)
        select ${replyJobType}::text,
               jsonb_build_object('post_id', ${postId}::uuid, 'persona_id', p.id),
               ${replyJobType}::text || ':' || ${postId}::uuid::text || ':' || p.id::text,
               ${replyJobMaxAttempts}
        from unnest(${missing}::uuid[]) as p(id)
        where p.id not in (select persona_id from replied)
        on conflict do nothing
        returning payload->>'persona_id' as persona_id, id, status
      )
      select persona_id::text, null::uuid as job_id, null as status, false as created from replied
      union all
      select persona_id::text, id, status, true from inserted`;
    for (const r of rows) {
      results.set(r.persona_id, {
        persona_id: r.persona_id,
        job_id: r.job_id,
        state: r.job_id ? "created" : "replied",
        status: r.status,
      });
    }
    missing = missing.filter((id) => !results.has(id));
    if (!missing.length) break;
    // Lost the race to an active job (the insert waited for it to commit): report it.
    const active = await db.sql<{ persona_id: string; id: string; status: JobStatus }[]>`
      select payload->>'persona_id' as persona_id, id, status from public.jobs
      where job_key = any (${missing.map((id) => replyJobKey(postId, id))}::text[])
        and status in ('pending', 'processing', 'failed')`;
    for (const r of active) {
      results.set(r.persona_id, {
        persona_id: r.persona_id,
        job_id: r.id,
        state: "active",
        status: r.status,
      });
    }
    missing = missing.filter((id) => !results.has(id));
  }
  if (missing.length) throw new Error(`could not enqueue reply jobs for ${missing.join(", ")}`);
  return { post_id: postId, jobs: wanted.map((id) => results.get(id)!) };
}
