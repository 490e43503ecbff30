-- Previews in the mirror, and the analysis kept to its shape.
--
-- The API's job body now carries `previews` (whether the job renders
-- results.preview_target and results.preview_result: asked for, or implied by
-- mode "preview"), beside `analysis` ({target, reference?, result?,
-- band_centres_hz}), which the previous migration added as a column. The
-- preview files themselves are in `results`, like any output: their URLs
-- are presigned and expire, so the UI asks the edge function for fresh ones.
-- This migration follows 20261130090000_mastering_jobs_options_cancel.sql,
-- which may already be deployed and is left as it is.
--
-- Rollout: apply this migration, then deploy the edge functions. The SQL
-- functions keep their earlier parameters (the new one has a default), so
-- the previous version of the functions keeps working in between; rows it
-- writes meanwhile keep `previews` as it was.

-- A JSON null (rather than SQL null) would fail the check below; PostgREST
-- passes null arguments as SQL null, so no row should have one, but the
-- migration must not stop on one if it does.
update public.mastering_jobs
   set analysis = null
 where jsonb_typeof(analysis) = 'null';

-- Rows from before previews existed rendered none.
alter table public.mastering_jobs
  add column previews boolean not null default false,
  add constraint mastering_jobs_analysis_is_object
    check (analysis is null or jsonb_typeof(analysis) = 'object');

comment on column public.mastering_jobs.previews is
  'Whether the job renders results.preview_target / preview_result (asked for, or mode preview), as the API reports it.';

-- A new parameter means new signatures: drop the old ones rather than leave
-- overloads behind. Same rules as before, with `previews` kept like `mode`.
drop function public.apply_mastering_webhook(text, uuid, text, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, text);
drop function public.sync_mastering_job(uuid, uuid, text, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, text);

-- Apply a verified job.* event, once per webhook id. Check and write are one
-- transaction (the row is locked), so a retry racing a slow first delivery
-- cannot apply twice. Returns:
--   'applied'     the row now shows the event's job
--   'duplicate'   this webhook id was applied before
--   'unknown_job' no row: the job was not created through the edge function
--                 (or its row was deleted with the job)
--   'conflict'    the row already ended with another terminal status
-- A null p_mastering, p_mode or p_previews (an API, or an edge function
-- version, that does not send them) keeps what the row has; null p_warnings
-- is no warnings, null p_analysis no analysis.
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
  p_mode text default null,
  p_previews boolean default null
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
         previews = coalesce(p_previews, j.previews),
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
  p_mode text default null,
  p_previews boolean default null
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
         previews = coalesce(p_previews, j.previews),
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
          j.mastering, j.warnings, j.analysis, j.mode, j.previews)
         is distinct from
         (p_status, p_progress, p_error, p_results, p_metrics,
          coalesce(p_mastering, j.mastering), coalesce(p_warnings, '[]'::jsonb),
          p_analysis, coalesce(p_mode, j.mode), coalesce(p_previews, j.previews));
$$;

-- New functions are executable by PUBLIC (and Supabase adds anon and
-- authenticated): these are for the edge function's service role only.
revoke execute on function public.apply_mastering_webhook(text, uuid, text, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, text, boolean)
  from public, anon, authenticated;
revoke execute on function public.sync_mastering_job(uuid, uuid, text, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, text, boolean)
  from public, anon, authenticated;
grant execute on function public.apply_mastering_webhook(text, uuid, text, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, text, boolean)
  to service_role;
grant execute on function public.sync_mastering_job(uuid, uuid, text, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, text, boolean)
  to service_role;
