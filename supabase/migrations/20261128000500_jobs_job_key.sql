-- The jobs queue becomes generic, as graphile-worker's: a job's targets live in its payload
-- and an optional job_key (e.g. generate_reply:<post>:<persona>) allows at most one active
-- job per key, instead of domain columns (post_id, persona_id) and a reply-only index.
-- No data is lost: existing rows get their targets copied into the payload and their key
-- set before the columns go. dedupe_key is unchanged ("at most one job per key, ever").
--
-- What replaces the FK cascades from posts and personas: a reply job whose post or persona
-- is gone completes as a no-op (the handler finds no target), so nothing is left to clean.

alter table public.jobs add column job_key text
  constraint jobs_job_key_length check (char_length(job_key) <= 200);

comment on column public.jobs.job_key is
  'At most one active (pending, processing, failed) job per key; done/dead rows keep theirs as history.';

-- Targets into the payload (rows enqueued so far already carry them; older ones may not).
update public.jobs
   set payload = payload || jsonb_strip_nulls(
         jsonb_build_object('post_id', post_id, 'persona_id', persona_id))
 where post_id is not null or persona_id is not null;

update public.jobs
   set job_key = 'generate_reply:' || post_id || ':' || persona_id
 where job_type = 'generate_reply' and post_id is not null and persona_id is not null;

-- One active job per key. Enqueues race on this index and collapse to one row; the old
-- jobs_active_reply_idx guaranteed the same for (post, persona), so no active rows collide.
create unique index jobs_job_key_active_idx on public.jobs (job_key)
  where job_key is not null and status in ('pending', 'processing', 'failed');

alter table public.jobs drop constraint jobs_reply_target;
drop index public.jobs_active_reply_idx, public.jobs_post_idx, public.jobs_persona_idx;
alter table public.jobs drop column post_id, drop column persona_id;
