/**
 * The migration, run for real: PGlite (Postgres compiled to WebAssembly, from
 * npm) with the few Supabase pieces the migration relies on (roles, auth.uid(),
 * auth.users, the supabase_realtime publication, default grants). Checks RLS,
 * the privileges, and the two SQL functions the PostgREST store calls, whose
 * rules MemoryJobStore copies for the handler tests.
 */

import assert from "node:assert/strict";
import { PGlite } from "npm:@electric-sql/pglite@0.5.16";

const MIGRATION = new URL(
  "../../migrations/20261123094448_mastering_jobs.sql",
  import.meta.url,
);

// What a Supabase database has before any project migration runs, reduced to
// what this migration touches.
const SUPABASE_SHIM = `
  create role anon nologin;
  create role authenticated nologin;
  create role service_role nologin bypassrls;
  grant usage on schema public to anon, authenticated, service_role;
  alter default privileges in schema public
    grant all on tables to anon, authenticated, service_role;
  alter default privileges in schema public
    grant all on functions to anon, authenticated, service_role;
  create schema auth;
  grant usage on schema auth to anon, authenticated, service_role;
  create table auth.users (id uuid primary key);
  create function auth.uid() returns uuid language sql stable as $$
    select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid
  $$;
  create publication supabase_realtime;
`;

let database: Promise<PGlite> | null = null;

/** One database for the file: starting PGlite takes seconds. */
function db(): Promise<PGlite> {
  database ??= (async () => {
    const pg = new PGlite();
    await pg.exec(SUPABASE_SHIM);
    await pg.exec(await Deno.readTextFile(MIGRATION));
    return pg;
  })();
  return database;
}

async function newUser(pg: PGlite): Promise<string> {
  const id = crypto.randomUUID();
  await pg.query("insert into auth.users (id) values ($1)", [id]);
  return id;
}

async function newJob(
  pg: PGlite,
  owner: string,
  status = "awaiting_upload",
): Promise<string> {
  const jobId = crypto.randomUUID();
  await pg.query(
    `insert into public.mastering_jobs (job_id, owner_id, status, progress)
     values ($1, $2, $3, $4)`,
    [jobId, owner, status, { stage: status, percent: 0 }],
  );
  return jobId;
}

/** Run `body` as a Supabase role (and user), then back to the superuser. */
async function as<T>(
  pg: PGlite,
  role: "anon" | "authenticated" | "service_role",
  userId: string | null,
  body: () => Promise<T>,
): Promise<T> {
  await pg.query("select set_config('request.jwt.claim.sub', $1, false)", [
    userId ?? "",
  ]);
  await pg.exec(`set role ${role}`);
  try {
    return await body();
  } finally {
    await pg.exec("reset role");
  }
}

async function row(
  pg: PGlite,
  jobId: string,
): Promise<Record<string, unknown>> {
  const result = await pg.query<Record<string, unknown>>(
    "select * from public.mastering_jobs where job_id = $1",
    [jobId],
  );
  return result.rows[0];
}

function apply(
  pg: PGlite,
  webhookId: string,
  jobId: string,
  status: string,
): Promise<string> {
  return pg.query<{ outcome: string }>(
    `select public.apply_mastering_webhook($1, $2, $3, $4, $5, $6, $7) as outcome`,
    [
      webhookId,
      jobId,
      status,
      { stage: status === "succeeded" ? "done" : "failed", percent: 100 },
      status === "failed"
        ? { code: "invalid_audio", message: "not audio" }
        : null,
      status === "succeeded"
        ? { wav16: { url: "https://s3/x", expires_at: "t", size: 3 } }
        : {},
      { duration_s: 9.5 },
    ],
  ).then((result) => result.rows[0].outcome);
}

function sync(
  pg: PGlite,
  jobId: string,
  owner: string,
  status: string,
  percent: number,
): Promise<unknown> {
  return pg.query(
    "select public.sync_mastering_job($1, $2, $3, $4, null, '{}', null)",
    [jobId, owner, status, { stage: status, percent }],
  );
}

Deno.test("migration: users read only their own jobs", async () => {
  const pg = await db();
  const alice = await newUser(pg);
  const bob = await newUser(pg);
  const aliceJob = await newJob(pg, alice);
  await newJob(pg, bob);

  const seen = await as(
    pg,
    "authenticated",
    alice,
    () =>
      pg.query<{ job_id: string }>("select job_id from public.mastering_jobs"),
  );
  assert.deepStrictEqual(seen.rows.map((r) => r.job_id), [aliceJob]);

  await assert.rejects(
    () =>
      as(
        pg,
        "anon",
        null,
        () => pg.query("select * from public.mastering_jobs"),
      ),
    /permission denied/,
  );
});

Deno.test("migration: users cannot write jobs or deliveries", async () => {
  const pg = await db();
  const alice = await newUser(pg);
  const job = await newJob(pg, alice);
  for (
    const statement of [
      `insert into public.mastering_jobs (job_id, owner_id, status)
       values (gen_random_uuid(), '${alice}', 'queued')`,
      `update public.mastering_jobs set status = 'succeeded' where job_id = '${job}'`,
      `delete from public.mastering_jobs where job_id = '${job}'`,
      `select * from public.mastering_webhook_deliveries`,
      `select public.apply_mastering_webhook('x', '${job}', 'succeeded', null, null, null, null)`,
      `select public.sync_mastering_job('${job}', '${alice}', 'queued', null, null, null, null)`,
    ]
  ) {
    await assert.rejects(
      () => as(pg, "authenticated", alice, () => pg.exec(statement)),
      /permission denied/,
      statement,
    );
  }
  assert.deepStrictEqual((await row(pg, job)).status, "awaiting_upload");
});

Deno.test("migration: the service role may call both functions", async () => {
  const pg = await db();
  const alice = await newUser(pg);
  const job = await newJob(pg, alice, "processing");
  const outcome = await as(
    pg,
    "service_role",
    null,
    () => apply(pg, `msg_${job}_succeeded`, job, "succeeded"),
  );
  assert.deepStrictEqual(outcome, "applied");
});

Deno.test("migration: apply_mastering_webhook applies each event once", async () => {
  const pg = await db();
  const alice = await newUser(pg);
  const job = await newJob(pg, alice, "processing");

  assert.deepStrictEqual(
    await apply(pg, `msg_${job}_succeeded`, job, "succeeded"),
    "applied",
  );
  const applied = await row(pg, job);
  assert.deepStrictEqual(applied.status, "succeeded");
  assert.deepStrictEqual(applied.last_webhook_id, `msg_${job}_succeeded`);
  assert.deepStrictEqual(applied.results, {
    wav16: { url: "https://s3/x", expires_at: "t", size: 3 },
  });
  assert.deepStrictEqual(applied.metrics, { duration_s: 9.5 });
  assert.deepStrictEqual(applied.owner_id, alice);

  assert.deepStrictEqual(
    await apply(pg, `msg_${job}_succeeded`, job, "succeeded"),
    "duplicate",
  );
  // Same status under a new id (a re-sent event with fresh URLs) is fine.
  assert.deepStrictEqual(
    await apply(pg, `msg_${job}_again`, job, "succeeded"),
    "applied",
  );
  // Another ended status is not.
  assert.deepStrictEqual(
    await apply(pg, `msg_${job}_failed`, job, "failed"),
    "conflict",
  );
  assert.deepStrictEqual((await row(pg, job)).status, "succeeded");
  assert.deepStrictEqual(
    await apply(pg, "msg_unknown", crypto.randomUUID(), "failed"),
    "unknown_job",
  );
});

Deno.test("migration: sync_mastering_job only moves running jobs forward", async () => {
  const pg = await db();
  const alice = await newUser(pg);
  const bob = await newUser(pg);
  const job = await newJob(pg, alice);

  await sync(pg, job, alice, "processing", 40);
  assert.deepStrictEqual((await row(pg, job)).progress, {
    stage: "processing",
    percent: 40,
  });

  await sync(pg, job, alice, "queued", 0); // an older poll answering late
  assert.deepStrictEqual((await row(pg, job)).status, "processing");

  await sync(pg, job, bob, "expired", 0); // not bob's job
  assert.deepStrictEqual((await row(pg, job)).status, "processing");

  const before = (await row(pg, job)).updated_at;
  await sync(pg, job, alice, "processing", 40); // nothing new: no write
  assert.deepStrictEqual((await row(pg, job)).updated_at, before);

  const expiring = await newJob(pg, alice);
  await sync(pg, expiring, alice, "expired", 0);
  assert.deepStrictEqual((await row(pg, expiring)).status, "expired");
  await sync(pg, expiring, alice, "processing", 10); // ended rows stay ended
  assert.deepStrictEqual((await row(pg, expiring)).status, "expired");
});

Deno.test("migration: statuses are checked and jobs go with their user", async () => {
  const pg = await db();
  const alice = await newUser(pg);
  await assert.rejects(
    () => newJob(pg, alice, "done"),
    /mastering_jobs_status_check/,
  );
  const job = await newJob(pg, alice, "processing");
  await apply(pg, `msg_${job}_failed`, job, "failed");
  await pg.query("delete from auth.users where id = $1", [alice]);
  assert.deepStrictEqual(await row(pg, job), undefined);
  const deliveries = await pg.query(
    "select 1 from public.mastering_webhook_deliveries where job_id = $1",
    [job],
  );
  assert.deepStrictEqual(deliveries.rows.length, 0);
});

Deno.test("migration: mastering_jobs is published to Realtime", async () => {
  const pg = await db();
  const published = await pg.query<{ tablename: string }>(
    `select tablename from pg_publication_tables
      where pubname = 'supabase_realtime' and schemaname = 'public'`,
  );
  assert.deepStrictEqual(published.rows.map((r) => r.tablename), [
    "mastering_jobs",
  ]);
});

// Last: closing the shared database lets Deno's resource sanitizer pass.
Deno.test("migration: close the database", async () => {
  if (database !== null) await (await database).close();
});
