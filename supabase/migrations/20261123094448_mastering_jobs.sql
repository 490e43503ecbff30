-- Spectrum's per-user mirror of mastering jobs.
--
-- The AWS mastering API is the source of truth for a job. This table is the
-- copy that Supabase can protect with RLS and push to the browser over
-- Realtime. Only the `ai-mastering` edge functions write it, with the service
-- role: when a job is created (owner known from the caller's JWT), when a
-- signed webhook says it ended, and when its owner polls it.

create table public.mastering_jobs (
  job_id uuid primary key,
  owner_id uuid not null references auth.users (id) on delete cascade,
  status text not null check (
    status in (
      'awaiting_upload', 'queued', 'processing', 'succeeded', 'failed', 'expired'
    )
  ),
  progress jsonb,         -- {stage, percent}
  error jsonb,            -- {code, message} when failed/expired
  results jsonb,          -- {<format>: {url, expires_at, size}}; URLs expire
  metrics jsonb,          -- {duration_s, target_lufs, ..., processing_s}
  metadata jsonb,         -- the caller's metadata, as given at creation
  last_webhook_id text,   -- the webhook-id that last changed the row
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table public.mastering_jobs is
  'Mirror of AWS mastering jobs per Supabase user; written only by the ai-mastering edge functions (service role).';

-- Leading owner_id: serves RLS (owner_id = auth.uid()) and "my recent jobs".
create index mastering_jobs_owner_id_created_at_idx
  on public.mastering_jobs (owner_id, created_at desc);

alter table public.mastering_jobs enable row level security;

-- Users read their own jobs and nothing else; there are no insert, update or
-- delete policies, so users cannot write (the service role bypasses RLS).
-- `(select auth.uid())` is evaluated once per query, not once per row.
create policy "Owners read their mastering jobs"
  on public.mastering_jobs
  for select
  to authenticated
  using ((select auth.uid()) = owner_id);

-- Supabase's default privileges grant anon and authenticated every privilege
-- on new public tables. RLS already stops them; revoking means a policy added
-- by mistake later still cannot open writes.
revoke all on table public.mastering_jobs from anon, authenticated;
grant select on table public.mastering_jobs to authenticated;
grant all on table public.mastering_jobs to service_role;

-- Webhook ids already applied: replay protection. A signed webhook stays
-- valid for 5 minutes; remembering its id for the life of the job means a
-- captured delivery can never be applied twice. One row per job per ended
-- event; they go with the job.
create table public.mastering_webhook_deliveries (
  webhook_id text primary key,
  job_id uuid not null references public.mastering_jobs (job_id) on delete cascade,
  received_at timestamptz not null default now()
);

create index mastering_webhook_deliveries_job_id_idx
  on public.mastering_webhook_deliveries (job_id);

-- RLS on with no policy at all: only the service role can touch it.
alter table public.mastering_webhook_deliveries enable row level security;
revoke all on table public.mastering_webhook_deliveries from anon, authenticated;
grant all on table public.mastering_webhook_deliveries to service_role;

-- Apply a verified job.succeeded / job.failed event, once per webhook id.
-- Check and write are one transaction (the row is locked), so a retry racing
-- a slow first delivery cannot apply twice. Returns:
--   'applied'     the row now shows the event's job
--   'duplicate'   this webhook id was applied before
--   'unknown_job' no row: the job was not created through the edge function
--   'conflict'    the row already ended with another terminal status
create function public.apply_mastering_webhook(
  p_webhook_id text,
  p_job_id uuid,
  p_status text,
  p_progress jsonb,
  p_error jsonb,
  p_results jsonb,
  p_metrics jsonb
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
  if v_status in ('succeeded', 'failed', 'expired') and v_status <> p_status then
    return 'conflict';
  end if;
  insert into public.mastering_webhook_deliveries (webhook_id, job_id)
  values (p_webhook_id, p_job_id)
  on conflict (webhook_id) do nothing;
  if not found then
    return 'duplicate';
  end if;
  update public.mastering_jobs
     set status = p_status,
         progress = p_progress,
         error = p_error,
         results = p_results,
         metrics = p_metrics,
         last_webhook_id = p_webhook_id,
         updated_at = now()
   where job_id = p_job_id;
  return 'applied';
end;
$$;

-- Bring a running job's row up to what the API just told its owner (the edge
-- function calls this on every GET). It is how `expired`, which sends no
-- webhook, and progress reach Realtime. It never touches an ended row (that
-- is the webhook's), never moves a job backwards (two polls can answer out of
-- order), and writes nothing when nothing changed (no Realtime noise).
create function public.sync_mastering_job(
  p_job_id uuid,
  p_owner_id uuid,
  p_status text,
  p_progress jsonb,
  p_error jsonb,
  p_results jsonb,
  p_metrics jsonb
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
         updated_at = now()
   where j.job_id = p_job_id
     and j.owner_id = p_owner_id
     and j.status in ('awaiting_upload', 'queued', 'processing')
     and array_position(
           array['awaiting_upload', 'queued', 'processing', 'succeeded', 'failed', 'expired'],
           p_status
         ) >= array_position(
           array['awaiting_upload', 'queued', 'processing'],
           j.status
         )
     and (j.status, j.progress) is distinct from (p_status, p_progress);
$$;

-- New functions are executable by PUBLIC (and Supabase adds anon and
-- authenticated): these are for the edge function's service role only.
revoke execute on function public.apply_mastering_webhook(text, uuid, text, jsonb, jsonb, jsonb, jsonb)
  from public, anon, authenticated;
revoke execute on function public.sync_mastering_job(uuid, uuid, text, jsonb, jsonb, jsonb, jsonb)
  from public, anon, authenticated;
grant execute on function public.apply_mastering_webhook(text, uuid, text, jsonb, jsonb, jsonb, jsonb)
  to service_role;
grant execute on function public.sync_mastering_job(uuid, uuid, text, jsonb, jsonb, jsonb, jsonb)
  to service_role;

-- Realtime: the UI subscribes to changes of its own rows (Realtime applies the
-- select policy above per subscriber). Every Supabase project has this
-- publication; the guard only keeps the migration runnable on plain Postgres.
do $$
begin
  if exists (select 1 from pg_catalog.pg_publication where pubname = 'supabase_realtime') then
    alter publication supabase_realtime add table public.mastering_jobs;
  else
    raise notice 'publication supabase_realtime not found: Realtime will not see mastering_jobs';
  end if;
end;
$$;
