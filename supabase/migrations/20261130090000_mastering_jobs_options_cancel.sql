-- Mastering options, previews and modes, and cancelled jobs, in the mirror.
--
-- The API's job body gained `mastering` (the resolved options), `warnings`,
-- `analysis` and `mode`, and a job can end `cancelled` (on request) besides
-- succeeded, failed and expired; every ended status now sends a webhook
-- (job.succeeded, job.failed, job.expired, job.cancelled). This migration
-- follows 20261123094448_mastering_jobs.sql, which may already be deployed
-- and is left as it is.
--
-- Rollout: apply this migration, then deploy the edge functions. The SQL
-- functions keep their earlier parameters (the new ones have defaults), so
-- the previous version of the functions keeps working in between.

-- `mode` is not checked against a list: the API owns the set of modes, and a
-- mode added there must not make a webhook fail here (the sender would retry
-- it for a day). Rows from before modes existed were all plain masters.
alter table public.mastering_jobs
  add column mastering jsonb,
  add column warnings jsonb not null default '[]'::jsonb
    constraint mastering_jobs_warnings_is_list
    check (jsonb_typeof(warnings) = 'array'),
  add column analysis jsonb,
  add column mode text not null default 'master';

comment on column public.mastering_jobs.mastering is
  'Mastering options: as asked at creation, then as the API resolved them ({loudness, loudness_lufs, true_peak_dbtp, intensity, limiter}).';
comment on column public.mastering_jobs.warnings is
  'The job''s warnings, [{code, message}] (e.g. loudness_not_reached).';
comment on column public.mastering_jobs.analysis is
  'Measurements: {target, reference?, result?, band_centres_hz}; null until the job has them.';
comment on column public.mastering_jobs.mode is
  'master, preview or analyze, as the API reports it.';

alter table public.mastering_jobs
  drop constraint mastering_jobs_status_check,
  add constraint mastering_jobs_status_check check (
    status in (
      'awaiting_upload', 'queued', 'processing',
      'succeeded', 'failed', 'expired', 'cancelled'
    )
  );

-- New parameters mean new signatures: drop the old ones rather than leave
-- overloads behind. Same rules as before, with `cancelled` as one more ended
-- status: a row that ended one way never takes another (a cancelled job
-- legitimately receives nothing but job.cancelled).
drop function public.apply_mastering_webhook(text, uuid, text, jsonb, jsonb, jsonb, jsonb);
drop function public.sync_mastering_job(uuid, uuid, text, jsonb, jsonb, jsonb, jsonb);

-- Apply a verified job.* event, once per webhook id. Check and write are one
-- transaction (the row is locked), so a retry racing a slow first delivery
-- cannot apply twice. Returns:
--   'applied'     the row now shows the event's job
--   'duplicate'   this webhook id was applied before
--   'unknown_job' no row: the job was not created through the edge function
--                 (or its row was deleted with the job)
--   'conflict'    the row already ended with another terminal status
-- A null p_mastering or p_mode (an API, or an edge function version, that
-- does not send them) keeps what the row has; null p_warnings is no warnings.
create function public.apply_mastering_webhook(
  p_webhook_id text,
  p_job_id uuid,
  p_status text,
  p_progress jsonb,
  p_error jsonb,
  p_results jsonb,
  p_metrics jsonb,
  p_mastering jsonb default null,
  p_warnings jsonb default null,
  p_analysis jsonb default null,
  p_mode text default null
) returns text
language plpgsql
security invoker
set search_path = ''
as $$
declare
  v_status text;
begin
  select j.status into v_status
    from public.mastering_jobs as j
   where j.job_id = p_job_id
     for update;
  if not found then
    return 'unknown_job';
  end if;
  -- The API never moves a job from one ended state to another.
  if v_status in ('succeeded', 'failed', 'expired', 'cancelled')
     and v_status <> p_status then
    return 'conflict';
  end if;
  insert into public.mastering_webhook_deliveries (webhook_id, job_id)
  values (p_webhook_id, p_job_id)
  on conflict (webhook_id) do nothing;
  if not found then
    return 'duplicate';
  end if;
  update public.mastering_jobs as j
     set status = p_status,
         progress = p_progress,
         error = p_error,
         results = p_results,
         metrics = p_metrics,
         mastering = coalesce(p_mastering, j.mastering),
         warnings = coalesce(p_warnings, '[]'::jsonb),
         analysis = p_analysis,
         mode = coalesce(p_mode, j.mode),
         last_webhook_id = p_webhook_id,
         updated_at = now()
   where j.job_id = p_job_id;
  return 'applied';
end;
$$;

-- Bring a running job's row up to what the API just told its owner (the edge
-- function calls this on every GET and after a cancel). It never touches an
-- ended row (that is the webhook's), never moves a job backwards (two polls
-- can answer out of order), and writes nothing when nothing changed (no
-- Realtime noise). Nulls as in apply_mastering_webhook.
create function public.sync_mastering_job(
  p_job_id uuid,
  p_owner_id uuid,
  p_status text,
  p_progress jsonb,
  p_error jsonb,
  p_results jsonb,
  p_metrics jsonb,
  p_mastering jsonb default null,
  p_warnings jsonb default null,
  p_analysis jsonb default null,
  p_mode text default null
) returns void
language sql
security invoker
set search_path = ''
as $$
  update public.mastering_jobs as j
     set status = p_status,
         progress = p_progress,
         error = p_error,
         results = p_results,
         metrics = p_metrics,
         mastering = coalesce(p_mastering, j.mastering),
         warnings = coalesce(p_warnings, '[]'::jsonb),
         analysis = p_analysis,
         mode = coalesce(p_mode, j.mode),
         updated_at = now()
   where j.job_id = p_job_id
     and j.owner_id = p_owner_id
     and j.status in ('awaiting_upload', 'queued', 'processing')
     and array_position(
           array['awaiting_upload', 'queued', 'processing',
                 'succeeded', 'failed', 'expired', 'cancelled'],
           p_status
         ) >= array_position(
           array['awaiting_upload', 'queued', 'processing'],
           j.status
         )
     and (j.status, j.progress, j.error, j.results, j.metrics,
          j.mastering, j.warnings, j.analysis, j.mode)
         is distinct from
         (p_status, p_progress, p_error, p_results, p_metrics,
          coalesce(p_mastering, j.mastering), coalesce(p_warnings, '[]'::jsonb),
          p_analysis, coalesce(p_mode, j.mode));
$$;

-- New functions are executable by PUBLIC (and Supabase adds anon and
-- authenticated): these are for the edge function's service role only.
revoke execute on function public.apply_mastering_webhook(text, uuid, text, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, text)
  from public, anon, authenticated;
revoke execute on function public.sync_mastering_job(uuid, uuid, text, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, text)
  from public, anon, authenticated;
grant execute on function public.apply_mastering_webhook(text, uuid, text, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, text)
  to service_role;
grant execute on function public.sync_mastering_job(uuid, uuid, text, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, text)
  to service_role;
