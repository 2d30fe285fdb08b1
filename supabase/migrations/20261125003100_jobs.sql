-- The background jobs queue: a table and the RPCs workers use on it (shared/jobs/queue.ts).
--
-- Life of a job:
--   pending ──claim──▶ processing ──complete──▶ done
--                          │ ▲
--                     fail │ │ claim (available_at reached)
--                          ▼ │
--                        failed ──(attempts = max_attempts)──▶ dead
-- A worker that dies mid-job leaves a `processing` row whose lock ages past
-- lock_timeout_s: recover_expired_jobs() turns it back into `failed` (claimable
-- at once) or `dead` when it has used all its attempts. A worker shutting down
-- hands back what it holds with release_jobs() (the attempt is not counted).
--
-- Workers connect as the database owner (the pool in shared/db.ts): RLS is
-- enabled with no policies and the API roles have no privileges, so nobody
-- reaches this table through PostgREST. The RPCs are security invoker and
-- executable by service_role (bypassrls) and the owner only.

create table public.jobs (
  id uuid primary key default gen_random_uuid(),
  job_type text not null
    constraint jobs_job_type_format check (job_type ~ '^[a-z][a-z0-9_]{0,63}$'),
  payload jsonb not null default '{}'::jsonb,
  status text not null default 'pending'
    constraint jobs_status_check check (status in ('pending', 'processing', 'done', 'failed', 'dead')),
  -- Attempts started so far (claim increments it; release gives it back).
  attempts integer not null default 0 constraint jobs_attempts_nonneg check (attempts >= 0),
  max_attempts integer not null default 5
    constraint jobs_max_attempts_range check (max_attempts between 1 and 50),
  -- A processing job whose lock is older than this is presumed lost and recovered.
  -- Workers cap their per-task timeout below it, so a live job is never recovered.
  lock_timeout_s integer not null default 60
    constraint jobs_lock_timeout_range check (lock_timeout_s between 2 and 3600),
  available_at timestamptz not null default now(),
  locked_at timestamptz,
  locked_by text,
  last_error text,
  -- Optional idempotency key: at most one job per key, ever (e.g. digest:<user>:<day>).
  dedupe_key text constraint jobs_dedupe_key_length check (char_length(dedupe_key) <= 200),
  -- Targets of generate_reply jobs (columns, not payload, so the active-job guard can index them).
  post_id uuid references public.posts (id) on delete cascade,
  persona_id uuid references public.personas (id) on delete cascade,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  finished_at timestamptz,
  constraint jobs_lock_consistent
    check ((status = 'processing') = (locked_at is not null and locked_by is not null)),
  constraint jobs_reply_target
    check (job_type <> 'generate_reply' or (post_id is not null and persona_id is not null))
);

comment on table public.jobs is
  'Background work queue. Claimed with claim_jobs() (FOR UPDATE SKIP LOCKED); see the RPCs below.';

-- The claim path: runnable rows in order, nothing else in the index.
create index jobs_claim_idx
  on public.jobs (available_at, created_at) where status in ('pending', 'failed');
-- Recovery: the (few) rows currently held by workers.
create index jobs_processing_idx
  on public.jobs (locked_at) where status = 'processing';
-- Dedupe lookup: one job per key, ever.
create unique index jobs_dedupe_key_idx
  on public.jobs (dedupe_key) where dedupe_key is not null;
-- The active-job guard: at most one generate_reply job per (post, persona) that is
-- pending, processing, or failed and waiting for its retry (still active: it will run
-- again). Enqueues race on this index and collapse to one row.
create unique index jobs_active_reply_idx
  on public.jobs (post_id, persona_id)
  where job_type = 'generate_reply' and status in ('pending', 'processing', 'failed');
-- FK cascades from posts and personas.
create index jobs_post_idx on public.jobs (post_id) where post_id is not null;
create index jobs_persona_idx on public.jobs (persona_id) where persona_id is not null;

alter table public.jobs enable row level security;
revoke all on public.jobs from anon, authenticated;

-- Retry delay before attempt n+1 after n failed attempts, without jitter:
-- 30 s, 60 s, 120 s, … capped at 10 min.
create or replace function public.job_backoff_base_s(p_attempts integer)
returns double precision
language sql
immutable
parallel safe
set search_path = ''
as $$
  select least(600.0, 30.0 * power(2.0, greatest(p_attempts, 1) - 1))::double precision
$$;

-- Claims up to p_n runnable jobs (of p_job_types, or any type when null) for
-- p_worker_id. Concurrent claimers skip each other's rows instead of waiting,
-- so they never get the same job and never block one another.
create or replace function public.claim_jobs(
  p_worker_id text,
  p_n integer,
  p_job_types text[] default null
)
returns setof public.jobs
language sql
volatile
set search_path = ''
as $$
  with candidates as (
    select j.id
    from public.jobs j
    where j.status in ('pending', 'failed')
      and j.available_at <= now()
      and (p_job_types is null or j.job_type = any (p_job_types))
    order by j.available_at, j.created_at
    limit greatest(p_n, 0)
    for update skip locked
  )
  update public.jobs j
     set status = 'processing',
         attempts = j.attempts + 1,
         locked_at = now(),
         locked_by = p_worker_id,
         updated_at = now()
    from candidates c
   where j.id = c.id
  returning j.*
$$;

-- Marks jobs done. Only rows still held by p_worker_id change (a worker whose lock
-- expired and was recovered cannot overwrite the new owner's state). Returns how many.
create or replace function public.complete_jobs(p_ids uuid[], p_worker_id text)
returns integer
language sql
volatile
set search_path = ''
as $$
  with done as (
    update public.jobs
       set status = 'done', locked_at = null, locked_by = null,
           finished_at = now(), updated_at = now()
     where id = any (p_ids) and status = 'processing' and locked_by = p_worker_id
    returning 1
  )
  select count(*)::integer from done
$$;

-- Records a failed attempt: `failed` with available_at = now() + backoff (base
-- job_backoff_base_s(attempts) × a uniform jitter in [0.8, 1.2)), or `dead` when the
-- job has used max_attempts or p_retry is false (a permanent failure).
-- Returns the new state; no row when p_worker_id no longer holds the job.
create or replace function public.fail_job(
  p_id uuid,
  p_worker_id text,
  p_error text,
  p_retry boolean default true
)
returns table (status text, attempts integer, available_at timestamptz, delay_s double precision)
language sql
volatile
set search_path = ''
as $$
  with decided as (
    select j.id,
           (not p_retry or j.attempts >= j.max_attempts) as give_up,
           public.job_backoff_base_s(j.attempts) * (0.8 + 0.4 * random()) as backoff_s
    from public.jobs j
    where j.id = p_id and j.status = 'processing' and j.locked_by = p_worker_id
    for update
  )
  update public.jobs j
     set status = case when d.give_up then 'dead' else 'failed' end,
         available_at = case when d.give_up then j.available_at
                             else now() + make_interval(secs => d.backoff_s) end,
         locked_at = null,
         locked_by = null,
         last_error = left(coalesce(p_error, 'unknown error'), 2000),
         finished_at = case when d.give_up then now() end,
         updated_at = now()
    from decided d
   where j.id = d.id
  returning j.status, j.attempts, j.available_at,
            extract(epoch from (j.available_at - now()))::double precision
$$;

-- Hands jobs back without counting the attempt (graceful shutdown): runnable at once.
create or replace function public.release_jobs(p_ids uuid[], p_worker_id text)
returns integer
language sql
volatile
set search_path = ''
as $$
  with released as (
    update public.jobs
       set status = case when attempts - 1 < 1 then 'pending' else 'failed' end,
           attempts = greatest(attempts - 1, 0),
           available_at = now(), locked_at = null, locked_by = null, updated_at = now()
     where id = any (p_ids) and status = 'processing' and locked_by = p_worker_id
    returning 1
  )
  select count(*)::integer from released
$$;

-- Jobs whose worker vanished (lock older than their lock_timeout_s): back to `failed`,
-- runnable at once, or `dead` when that was their last attempt. Safe to call from any
-- number of workers at once (SKIP LOCKED). Returns how many were recovered.
create or replace function public.recover_expired_jobs()
returns integer
language sql
volatile
set search_path = ''
as $$
  with expired as (
    select j.id
    from public.jobs j
    where j.status = 'processing'
      and j.locked_at < now() - make_interval(secs => j.lock_timeout_s)
    for update skip locked
  ), recovered as (
    update public.jobs j
       set status = case when j.attempts >= j.max_attempts then 'dead' else 'failed' end,
           available_at = now(),
           last_error = 'lock expired after ' || j.lock_timeout_s || ' s: worker '
                        || j.locked_by || ' was lost',
           finished_at = case when j.attempts >= j.max_attempts then now() end,
           locked_at = null,
           locked_by = null,
           updated_at = now()
      from expired e
     where j.id = e.id
    returning 1
  )
  select count(*)::integer from recovered
$$;

revoke execute on function public.claim_jobs(text, integer, text[]) from public, anon, authenticated;
revoke execute on function public.complete_jobs(uuid[], text) from public, anon, authenticated;
revoke execute on function public.fail_job(uuid, text, text, boolean) from public, anon, authenticated;
revoke execute on function public.release_jobs(uuid[], text) from public, anon, authenticated;
revoke execute on function public.recover_expired_jobs() from public, anon, authenticated;
grant execute on function public.claim_jobs(text, integer, text[]) to service_role;
grant execute on function public.complete_jobs(uuid[], text) to service_role;
grant execute on function public.fail_job(uuid, text, text, boolean) to service_role;
grant execute on function public.release_jobs(uuid[], text) to service_role;
grant execute on function public.recover_expired_jobs() to service_role;
