/**
 * The migrations, run for real: PGlite (Postgres compiled to WebAssembly, from
 * npm) with the few Supabase pieces they rely on (roles, auth.uid(),
 * auth.users, the supabase_realtime publication, default grants). Every file
 * in supabase/migrations is applied in order, as `supabase db push` does, so
 * the checks below hold for the schema a project ends up with. Checks RLS,
 * the privileges, and the two SQL functions the PostgREST store calls, whose
 * rules MemoryJobStore copies for the handler tests.
 *
 * One Deno test with steps: starting PGlite takes seconds, so the steps share
 * one database, and the test closes it in `finally` whatever a step did.
 */

import assert from "node:assert/strict";
import { PGlite } from "npm:@electric-sql/pglite@0.5.16";

const MIGRATIONS = new URL("../../migrations/", import.meta.url);
/** The first migration, which may be deployed without the later ones. */
const FIRST_MIGRATION = "20261123094448_mastering_jobs.sql";
/** The one that added `analysis`, which may be deployed without previews. */
const OPTIONS_MIGRATION = "20261130090000_mastering_jobs_options_cancel.sql";

// What a Supabase database has before any project migration runs, reduced to
// what these migrations touch.
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

async function migrationFiles(): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(MIGRATIONS)) {
    if (entry.isFile && entry.name.endsWith(".sql")) names.push(entry.name);
  }
  // Timestamp prefixes: name order is the order Supabase applies them in.
  return names.sort();
}

/** What a row written before the later migrations looks like afterwards. */
interface Upgraded {
  owner: string;
  jobId: string;
  /** Written after OPTIONS_MIGRATION with a JSON null (not SQL null) analysis. */
  jsonNullAnalysisJob: string;
}

/**
 * All migrations in order; after the first one, a job is recorded the way
 * the first version of the edge function did, to check that an upgrade
 * keeps it.
 */
async function migratedDatabase(): Promise<{ pg: PGlite; legacy: Upgraded }> {
  const pg = new PGlite();
  try {
    await pg.exec(SUPABASE_SHIM);
    const files = await migrationFiles();
    assert.equal(files[0], FIRST_MIGRATION);
    assert.ok(files.length >= 2, "the options/cancel migration is missing");
    let legacy: Omit<Upgraded, "jsonNullAnalysisJob"> | null = null;
    let jsonNullAnalysisJob: string | null = null;
    for (const name of files) {
      await pg.exec(await Deno.readTextFile(new URL(name, MIGRATIONS)));
      if (name === FIRST_MIGRATION) {
        const owner = await newUser(pg);
        const jobId = crypto.randomUUID();
        await pg.query(
          `insert into public.mastering_jobs
             (job_id, owner_id, status, progress, metadata)
           values ($1, $2, 'processing', $3, $4)`,
          [jobId, owner, { stage: "matching", percent: 50 }, { t: 1 }],
        );
        legacy = { owner, jobId };
      }
      if (name === OPTIONS_MIGRATION) {
        jsonNullAnalysisJob = crypto.randomUUID();
        await pg.query(
          `insert into public.mastering_jobs
             (job_id, owner_id, status, analysis)
           values ($1, $2, 'succeeded', 'null'::jsonb)`,
          [jsonNullAnalysisJob, legacy!.owner],
        );
      }
    }
    return {
      pg,
      legacy: { ...legacy!, jsonNullAnalysisJob: jsonNullAnalysisJob! },
    };
  } catch (error) {
    await pg.close();
    throw error;
  }
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
  extra: { mastering?: unknown; mode?: string } = {},
): Promise<string> {
  const jobId = crypto.randomUUID();
  await pg.query(
    `insert into public.mastering_jobs
       (job_id, owner_id, status, progress, mastering, mode)
     values ($1, $2, $3, $4, $5, coalesce($6, 'master'))`,
    [
      jobId,
      owner,
      status,
      { stage: status, percent: 0 },
      extra.mastering ?? null,
      extra.mode ?? null,
    ],
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

/** Moves a row's updated_at a minute back and returns it: a write made after this
 * changes it whatever the clock's resolution (two writes can share a millisecond). */
async function backdated(pg: PGlite, jobId: string): Promise<unknown> {
  await pg.query(
    "update public.mastering_jobs set updated_at = updated_at - interval '1 minute' where job_id = $1",
    [jobId],
  );
  return (await row(pg, jobId)).updated_at;
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

const RESOLVED = {
  loudness: "spotify",
  loudness_lufs: -14,
  true_peak_dbtp: -1,
  intensity: 0.7,
  limiter: "true_peak",
};
const WARNINGS = [
  { code: "loudness_not_reached", message: "Reached -15.2 LUFS" },
];
const ANALYSIS = {
  target: { lufs: -20.1, bands_db: [-3, -4] },
  result: { lufs: -14, bands_db: [-2, -3] },
  band_centres_hz: [100, 1000],
};

interface JobFields {
  mastering?: unknown;
  warnings?: unknown;
  analysis?: unknown;
  mode?: string | null;
  previews?: boolean | null;
}

/** The fields of a job body the SQL functions take after the first seven. */
function newer(fields: JobFields): unknown[] {
  return [
    fields.mastering ?? null,
    fields.warnings ?? null,
    fields.analysis ?? null,
    fields.mode ?? null,
    fields.previews ?? null,
  ];
}

/** As the edge function calls it: every parameter, by name, as PostgREST does. */
function apply(
  pg: PGlite,
  webhookId: string,
  jobId: string,
  status: string,
  fields: JobFields = {},
): Promise<string> {
  return pg.query<{ outcome: string }>(
    `select public.apply_mastering_webhook(
       p_webhook_id => $1, p_job_id => $2, p_status => $3, p_progress => $4,
       p_error => $5, p_results => $6, p_metrics => $7, p_mastering => $8,
       p_warnings => $9, p_analysis => $10, p_mode => $11,
       p_previews => $12) as outcome`,
    [
      webhookId,
      jobId,
      status,
      { stage: status === "succeeded" ? "done" : status, percent: 100 },
      status === "failed"
        ? { code: "invalid_audio", message: "not audio" }
        : null,
      status === "succeeded"
        ? { wav16: { url: "https://s3/x", expires_at: "t", size: 3 } }
        : {},
      { duration_s: 9.5 },
      ...newer(fields),
    ],
  ).then((result) => result.rows[0].outcome);
}

function sync(
  pg: PGlite,
  jobId: string,
  owner: string,
  status: string,
  percent: number,
  fields: JobFields = {},
): Promise<unknown> {
  return pg.query(
    `select public.sync_mastering_job(
       p_job_id => $1, p_owner_id => $2, p_status => $3, p_progress => $4,
       p_error => null, p_results => '{}', p_metrics => null,
       p_mastering => $5, p_warnings => $6, p_analysis => $7, p_mode => $8,
       p_previews => $9)`,
    [jobId, owner, status, { stage: status, percent }, ...newer(fields)],
  );
}

Deno.test("migrations", async (t) => {
  const { pg, legacy } = await migratedDatabase();
  try {
    await t.step(
      "a row from before the upgrade is kept, as a master",
      async () => {
        // Given a job recorded under the first migration only (see above)
        // When the later migrations have run
        const kept = await row(pg, legacy.jobId);
        // Then it is intact, with the new columns' defaults
        assert.equal(kept.status, "processing");
        assert.equal(kept.owner_id, legacy.owner);
        assert.deepEqual(kept.metadata, { t: 1 });
        assert.equal(kept.mode, "master");
        assert.deepEqual(kept.warnings, []);
        assert.equal(kept.mastering, null);
        assert.equal(kept.analysis, null);
        assert.equal(kept.previews, false);
        // And it can still end the new way
        await sync(pg, legacy.jobId, legacy.owner, "cancelled", 0);
        assert.equal((await row(pg, legacy.jobId)).status, "cancelled");
        // And a JSON null analysis from before the check became SQL null
        const nulled = await pg.query<{ kind: string | null }>(
          `select jsonb_typeof(analysis) as kind from public.mastering_jobs
            where job_id = $1`,
          [legacy.jsonNullAnalysisJob],
        );
        assert.deepStrictEqual(nulled.rows, [{ kind: null }]);
      },
    );

    await t.step("users read only their own jobs", async () => {
      const alice = await newUser(pg);
      const bob = await newUser(pg);
      const aliceJob = await newJob(pg, alice);
      await newJob(pg, bob);

      const seen = await as(
        pg,
        "authenticated",
        alice,
        () =>
          pg.query<{ job_id: string }>(
            "select job_id from public.mastering_jobs",
          ),
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

    await t.step("users cannot write jobs or deliveries", async () => {
      const alice = await newUser(pg);
      const job = await newJob(pg, alice);
      for (
        const statement of [
          `insert into public.mastering_jobs (job_id, owner_id, status)
           values (gen_random_uuid(), '${alice}', 'queued')`,
          `update public.mastering_jobs set status = 'cancelled' where job_id = '${job}'`,
          `update public.mastering_jobs set mastering = '{}' where job_id = '${job}'`,
          `delete from public.mastering_jobs where job_id = '${job}'`,
          `select * from public.mastering_webhook_deliveries`,
          `select public.apply_mastering_webhook('x', '${job}', 'succeeded', null, null, null, null)`,
          `select public.apply_mastering_webhook('x', '${job}', 'cancelled', null, null, null, null, null, null, null, 'master')`,
          `select public.sync_mastering_job('${job}', '${alice}', 'queued', null, null, null, null)`,
          `select public.sync_mastering_job('${job}', '${alice}', 'cancelled', null, null, null, null, null, null, null, null)`,
          `select public.apply_mastering_webhook('x', '${job}', 'cancelled', null, null, null, null, null, null, null, 'master', true)`,
          `select public.sync_mastering_job('${job}', '${alice}', 'cancelled', null, null, null, null, null, null, null, null, true)`,
          `update public.mastering_jobs set previews = true where job_id = '${job}'`,
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

    await t.step("the earlier signatures are gone: no overloads", async () => {
      const functions = await pg.query<{ name: string; args: number }>(
        `select p.proname as name, p.pronargs as args
           from pg_catalog.pg_proc as p
          where p.pronamespace = 'public'::regnamespace
          order by 1`,
      );
      assert.deepStrictEqual(functions.rows, [
        { name: "apply_mastering_webhook", args: 12 },
        { name: "sync_mastering_job", args: 12 },
      ]);
    });

    await t.step(
      "the service role calls both functions and deletes rows",
      async () => {
        const alice = await newUser(pg);
        const bob = await newUser(pg);
        const job = await newJob(pg, alice, "processing");
        const outcome = await as(
          pg,
          "service_role",
          null,
          () => apply(pg, `msg_${job}_succeeded`, job, "succeeded"),
        );
        assert.deepStrictEqual(outcome, "applied");
        await as(
          pg,
          "service_role",
          null,
          () => sync(pg, job, alice, "queued", 0),
        );

        // What PostgREST runs for the edge function's DELETE: scoped to the
        // caller, so bob's attempt removes nothing.
        const remove = (owner: string) =>
          as(
            pg,
            "service_role",
            null,
            () =>
              pg.query(
                `delete from public.mastering_jobs
                where job_id = $1 and owner_id = $2 returning job_id`,
                [job, owner],
              ),
          );
        assert.equal((await remove(bob)).rows.length, 0);
        assert.equal((await remove(alice)).rows.length, 1);
        assert.equal(await row(pg, job), undefined);
        const deliveries = await pg.query(
          "select 1 from public.mastering_webhook_deliveries where job_id = $1",
          [job],
        );
        assert.equal(deliveries.rows.length, 0, "deliveries go with the job");
        // A late event for the deleted job finds no row and makes none.
        assert.equal(
          await apply(pg, `msg_${job}_late`, job, "cancelled"),
          "unknown_job",
        );
      },
    );

    await t.step(
      "apply_mastering_webhook applies each event once",
      async () => {
        const alice = await newUser(pg);
        const job = await newJob(pg, alice, "processing");

        assert.deepStrictEqual(
          await apply(pg, `msg_${job}_succeeded`, job, "succeeded", {
            mastering: RESOLVED,
            warnings: WARNINGS,
            analysis: ANALYSIS,
            mode: "master",
          }),
          "applied",
        );
        const applied = await row(pg, job);
        assert.deepStrictEqual(applied.status, "succeeded");
        assert.deepStrictEqual(applied.last_webhook_id, `msg_${job}_succeeded`);
        assert.deepStrictEqual(applied.results, {
          wav16: { url: "https://s3/x", expires_at: "t", size: 3 },
        });
        assert.deepStrictEqual(applied.metrics, { duration_s: 9.5 });
        assert.deepStrictEqual(applied.mastering, RESOLVED);
        assert.deepStrictEqual(applied.warnings, WARNINGS);
        assert.deepStrictEqual(applied.analysis, ANALYSIS);
        assert.deepStrictEqual(applied.owner_id, alice);

        assert.deepStrictEqual(
          await apply(pg, `msg_${job}_succeeded`, job, "succeeded"),
          "duplicate",
        );
        assert.deepStrictEqual((await row(pg, job)).warnings, WARNINGS);
        // Same status under a new id (a re-sent event with fresh URLs) is fine.
        assert.deepStrictEqual(
          await apply(pg, `msg_${job}_again`, job, "succeeded"),
          "applied",
        );
        // Another ended status is not.
        for (const other of ["failed", "expired", "cancelled"]) {
          assert.deepStrictEqual(
            await apply(pg, `msg_${job}_${other}`, job, other),
            "conflict",
            other,
          );
        }
        assert.deepStrictEqual((await row(pg, job)).status, "succeeded");
        assert.deepStrictEqual(
          await apply(pg, "msg_unknown", crypto.randomUUID(), "failed"),
          "unknown_job",
        );
      },
    );

    await t.step(
      "job.expired and job.cancelled end a row for good",
      async () => {
        const alice = await newUser(pg);
        for (const ended of ["expired", "cancelled"]) {
          // Given a running job
          const job = await newJob(pg, alice, "queued");
          // When its ending event arrives
          assert.equal(await apply(pg, `msg_${job}`, job, ended), "applied");
          // Then the row shows it, and only the same status may follow
          assert.equal((await row(pg, job)).status, ended);
          assert.equal(await apply(pg, `msg_${job}_2`, job, ended), "applied");
          assert.equal(
            await apply(pg, `msg_${job}_late`, job, "succeeded"),
            "conflict",
          );
          assert.equal((await row(pg, job)).status, ended);
        }
      },
    );

    await t.step("null options and mode keep what the row has", async () => {
      // Given a job recorded with the options as asked
      const alice = await newUser(pg);
      const asked = { loudness: "spotify" };
      const job = await newJob(pg, alice, "processing", {
        mastering: asked,
        mode: "preview",
      });
      // When the previous edge function version (seven parameters, the
      // rollout window) applies an event without them
      // (named, as PostgREST calls it)
      const outcome = await pg.query<{ outcome: string }>(
        `select public.apply_mastering_webhook(
           p_webhook_id => $1, p_job_id => $2, p_status => 'succeeded',
           p_progress => '{}', p_error => null, p_results => '{}',
           p_metrics => null) as outcome`,
        [`msg_${job}`, job],
      );
      // Then the event applies and the row keeps its options and mode
      assert.equal(outcome.rows[0].outcome, "applied");
      const kept = await row(pg, job);
      assert.deepStrictEqual(kept.mastering, asked);
      assert.equal(kept.mode, "preview");
      assert.deepStrictEqual(kept.warnings, []);
    });

    await t.step(
      "sync_mastering_job only moves running jobs forward",
      async () => {
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

        const before = await backdated(pg, job);
        await sync(pg, job, alice, "processing", 40); // nothing new: no write
        assert.deepStrictEqual((await row(pg, job)).updated_at, before);

        for (const ended of ["expired", "cancelled"]) {
          const ending = await newJob(pg, alice);
          await sync(pg, ending, alice, ended, 0);
          assert.deepStrictEqual((await row(pg, ending)).status, ended);
          await sync(pg, ending, alice, "processing", 10); // ended rows stay ended
          assert.deepStrictEqual((await row(pg, ending)).status, ended);
        }
      },
    );

    await t.step(
      "sync_mastering_job stores options, warnings, analysis",
      async () => {
        // Given a running job recorded with the options as asked
        const alice = await newUser(pg);
        const job = await newJob(pg, alice, "processing", {
          mastering: { loudness: "spotify", intensity: 0.7 },
        });
        await sync(pg, job, alice, "processing", 40);
        const before = await backdated(pg, job);

        // When a poll brings the resolved options, status and progress unchanged
        await sync(pg, job, alice, "processing", 40, {
          mastering: RESOLVED,
          mode: "master",
        });
        // Then that alone is a change worth writing
        const resolved = await row(pg, job);
        assert.deepStrictEqual(resolved.mastering, RESOLVED);
        assert.notDeepStrictEqual(resolved.updated_at, before);

        // When the job ends with warnings and an analysis
        await sync(pg, job, alice, "succeeded", 100, {
          mastering: RESOLVED,
          warnings: WARNINGS,
          analysis: ANALYSIS,
          mode: "master",
        });
        const ended = await row(pg, job);
        assert.equal(ended.status, "succeeded");
        assert.deepStrictEqual(ended.warnings, WARNINGS);
        assert.deepStrictEqual(ended.analysis, ANALYSIS);
        assert.deepStrictEqual(ended.mastering, RESOLVED);
      },
    );

    await t.step(
      "previews are stored, and kept when a body leaves them out",
      async () => {
        // Given a running job recorded as rendering previews
        const alice = await newUser(pg);
        const job = await newJob(pg, alice, "processing");
        await pg.query(
          "update public.mastering_jobs set previews = true where job_id = $1",
          [job],
        );
        // When a poll without `previews` (an older API) comes in
        await sync(pg, job, alice, "processing", 60);
        // Then the row keeps them
        assert.equal((await row(pg, job)).previews, true);
        // When it succeeds with its preview files and an analysis
        const previewResults = {
          preview_target: { url: "https://s3/pt.mp3", size: 2 },
          preview_result: { url: "https://s3/pr.mp3", size: 2 },
        };
        const outcome = await pg.query<{ outcome: string }>(
          `select public.apply_mastering_webhook(
             p_webhook_id => $1, p_job_id => $2, p_status => 'succeeded',
             p_progress => '{}', p_error => null, p_results => $3,
             p_metrics => null, p_analysis => $4, p_mode => 'preview',
             p_previews => true) as outcome`,
          [`msg_${job}`, job, previewResults, ANALYSIS],
        );
        // Then the row has the previews' URLs, the flag and the analysis
        assert.equal(outcome.rows[0].outcome, "applied");
        const ended = await row(pg, job);
        assert.deepStrictEqual(ended.results, previewResults);
        assert.equal(ended.previews, true);
        assert.equal(ended.mode, "preview");
        assert.deepStrictEqual(ended.analysis, ANALYSIS);

        // And a job that renders none says so from its first synced body
        const plain = await newJob(pg, alice, "queued");
        await sync(pg, plain, alice, "processing", 10, { previews: false });
        assert.equal((await row(pg, plain)).previews, false);
        const before = await backdated(pg, plain);
        await sync(pg, plain, alice, "processing", 10, { previews: true });
        const turned = await row(pg, plain);
        assert.equal(turned.previews, true, "a change of previews is written");
        assert.notDeepStrictEqual(turned.updated_at, before);
      },
    );

    await t.step("an analysis that is not an object is refused", async () => {
      const alice = await newUser(pg);
      const job = await newJob(pg, alice, "processing");
      // A JSON string goes as its text: a bare JS string would not be JSON.
      for (const bad of [[1, 2], JSON.stringify("loud"), 3, true]) {
        await assert.rejects(
          () => sync(pg, job, alice, "succeeded", 100, { analysis: bad }),
          /mastering_jobs_analysis_is_object/,
          JSON.stringify(bad),
        );
      }
      assert.equal((await row(pg, job)).status, "processing");
    });

    await t.step(
      "statuses and warnings are checked; jobs go with their user",
      async () => {
        const alice = await newUser(pg);
        await assert.rejects(
          () => newJob(pg, alice, "done"),
          /mastering_jobs_status_check/,
        );
        const job = await newJob(pg, alice, "cancelled");
        await assert.rejects(
          () =>
            pg.query(
              "update public.mastering_jobs set warnings = '{}' where job_id = $1",
              [job],
            ),
          /mastering_jobs_warnings_is_list/,
        );
        const failed = await newJob(pg, alice, "processing");
        await apply(pg, `msg_${failed}_failed`, failed, "failed");
        await pg.query("delete from auth.users where id = $1", [alice]);
        assert.deepStrictEqual(await row(pg, job), undefined);
        assert.deepStrictEqual(await row(pg, failed), undefined);
        const deliveries = await pg.query(
          "select 1 from public.mastering_webhook_deliveries where job_id = $1",
          [failed],
        );
        assert.deepStrictEqual(deliveries.rows.length, 0);
      },
    );

    await t.step("mastering_jobs is published to Realtime", async () => {
      const published = await pg.query<{ tablename: string }>(
        `select tablename from pg_publication_tables
          where pubname = 'supabase_realtime' and schemaname = 'public'`,
      );
      assert.deepStrictEqual(published.rows.map((r) => r.tablename), [
        "mastering_jobs",
      ]);
    });
  } finally {
    // Closing the database lets Deno's resource sanitizer pass, and runs
    // even when a step failed.
    await pg.close();
  }
});
