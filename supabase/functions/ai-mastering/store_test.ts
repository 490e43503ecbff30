/**
 * PostgrestJobStore: the requests it makes to PostgREST (checked against a
 * fake fetch; migration_test.ts runs the SQL functions they call).
 */

import assert from "node:assert/strict";
import type { JobSnapshot } from "./jobs.ts";
import { PostgrestJobStore, StoreError } from "./store.ts";
import { ALICE } from "./testing.ts";

interface Sent {
  url: string;
  method: string;
  headers: Headers;
  body: unknown;
}

function fakePostgrest(
  answer: (sent: Sent) => Response,
): { sent: Sent[]; store: PostgrestJobStore } {
  const sent: Sent[] = [];
  const fetchFn = (input: Request | URL | string, init?: RequestInit) => {
    const request: Sent = {
      url: String(input),
      method: init?.method ?? "GET",
      headers: new Headers(init?.headers),
      body: typeof init?.body === "string" ? JSON.parse(init.body) : null,
    };
    sent.push(request);
    return Promise.resolve(answer(request));
  };
  return {
    sent,
    store: new PostgrestJobStore(
      "https://project.supabase.co/",
      "service-key",
      fetchFn,
    ),
  };
}

const JOB: JobSnapshot = {
  job_id: "0b6a2c1e-4f3d-4e5a-8b7c-9d0e1f2a3b4c",
  status: "succeeded",
  progress: { stage: "done", percent: 100 },
  error: null,
  results: {
    mp3: {
      url: "https://s3/x.mp3",
      expires_at: "t",
      size: 1,
      lufs: -14,
      true_peak_dbtp: -1,
    },
    preview_target: {
      url: "https://s3/preview-target.mp3",
      expires_at: "t",
      size: 1,
      lufs: -14.1,
      true_peak_dbtp: -2,
    },
    preview_result: {
      url: "https://s3/preview-result.mp3",
      expires_at: "t",
      size: 1,
      lufs: -14,
      true_peak_dbtp: -1,
    },
  },
  metrics: { duration_s: 3 },
  mastering: {
    loudness: "spotify",
    loudness_lufs: -14,
    true_peak_dbtp: -1,
    intensity: 0.7,
    limiter: "true_peak",
  },
  warnings: [{ code: "loudness_not_reached", message: "-14.8 LUFS" }],
  analysis: { target: { lufs: -20 }, band_centres_hz: [100, 1000] },
  mode: "master",
  previews: true,
};

/** The job's new fields as the SQL functions take them. */
const NEWER_PARAMETERS = {
  p_mastering: JOB.mastering,
  p_warnings: JOB.warnings,
  p_analysis: JOB.analysis,
  p_mode: "master",
  p_previews: true,
};

function assertServiceRole(headers: Headers): void {
  assert.equal(headers.get("apikey"), "service-key");
  assert.equal(headers.get("authorization"), "Bearer service-key");
}

Deno.test("upsertCreated upserts the row on job_id", async () => {
  const { sent, store } = fakePostgrest(() =>
    new Response(null, { status: 201 })
  );
  await store.upsertCreated({
    jobId: JOB.job_id,
    ownerId: ALICE,
    status: "awaiting_upload",
    metadata: { a: 1 },
    mastering: { loudness: -12 },
    mode: "preview",
    previews: true,
  });
  assert.equal(sent.length, 1);
  const [request] = sent;
  assert.equal(request.method, "POST");
  assert.equal(
    request.url,
    "https://project.supabase.co/rest/v1/mastering_jobs?on_conflict=job_id",
  );
  assertServiceRole(request.headers);
  assert.equal(
    request.headers.get("prefer"),
    "resolution=merge-duplicates,return=minimal",
  );
  const body = request.body as Record<string, unknown>;
  assert.equal(body.job_id, JOB.job_id);
  assert.equal(body.owner_id, ALICE);
  assert.equal(body.status, "awaiting_upload");
  assert.deepEqual(body.progress, { stage: "awaiting_upload", percent: 0 });
  assert.deepEqual(body.metadata, { a: 1 });
  assert.deepEqual(body.mastering, { loudness: -12 });
  assert.equal(body.mode, "preview");
  assert.equal(body.previews, true);
});

Deno.test("applyWebhook calls the SQL function and reads its outcome", async () => {
  for (const outcome of ["applied", "duplicate", "unknown_job", "conflict"]) {
    const { sent, store } = fakePostgrest(() => Response.json(outcome));
    assert.equal(await store.applyWebhook("msg_1", JOB), outcome);
    assert.equal(
      sent[0].url,
      "https://project.supabase.co/rest/v1/rpc/apply_mastering_webhook",
    );
    assertServiceRole(sent[0].headers);
    assert.deepEqual(sent[0].body, {
      p_webhook_id: "msg_1",
      p_job_id: JOB.job_id,
      p_status: "succeeded",
      p_progress: JOB.progress,
      p_error: null,
      p_results: JOB.results,
      p_metrics: JOB.metrics,
      ...NEWER_PARAMETERS,
    });
  }
  const { store } = fakePostgrest(() => Response.json("maybe"));
  await assert.rejects(() => store.applyWebhook("msg_1", JOB), StoreError);
});

Deno.test("syncFromApi calls sync_mastering_job with the owner", async () => {
  const { sent, store } = fakePostgrest(() =>
    new Response(null, { status: 204 })
  );
  await store.syncFromApi(ALICE, JOB);
  assert.equal(
    sent[0].url,
    "https://project.supabase.co/rest/v1/rpc/sync_mastering_job",
  );
  assert.deepEqual(sent[0].body, {
    p_job_id: JOB.job_id,
    p_owner_id: ALICE,
    p_status: "succeeded",
    p_progress: JOB.progress,
    p_error: null,
    p_results: JOB.results,
    p_metrics: JOB.metrics,
    ...NEWER_PARAMETERS,
  });
});

Deno.test("deleteOwned deletes only the owner's row and says if there was one", async () => {
  // Given PostgREST answering the deleted rows (return=representation)
  const removed = fakePostgrest(() => Response.json([{ job_id: JOB.job_id }]));
  // When the owner's row is deleted
  assert.equal(await removed.store.deleteOwned(ALICE, JOB.job_id), true);
  // Then one DELETE filtered on job and owner, as the service role
  const [request] = removed.sent;
  assert.equal(request.method, "DELETE");
  assert.equal(
    request.url,
    `https://project.supabase.co/rest/v1/mastering_jobs?job_id=eq.${JOB.job_id}&owner_id=eq.${ALICE}&select=job_id`,
  );
  assertServiceRole(request.headers);
  assert.equal(request.headers.get("prefer"), "return=representation");

  // And no matching row (none, or another owner's) is false
  const none = fakePostgrest(() => Response.json([]));
  assert.equal(await none.store.deleteOwned(ALICE, JOB.job_id), false);
  const odd = fakePostgrest(() => Response.json({ deleted: 1 }));
  await assert.rejects(
    () => odd.store.deleteOwned(ALICE, JOB.job_id),
    StoreError,
  );
});

Deno.test("get reads one row or null", async () => {
  const row = { job_id: JOB.job_id, owner_id: ALICE, status: "queued" };
  const found = fakePostgrest(() => Response.json([row]));
  assert.deepEqual(await found.store.get(JOB.job_id), row);
  assert.equal(
    found.sent[0].url,
    `https://project.supabase.co/rest/v1/mastering_jobs?job_id=eq.${JOB.job_id}&select=*`,
  );
  assert.equal(found.sent[0].method, "GET");
  const missing = fakePostgrest(() => Response.json([]));
  assert.equal(await missing.store.get(JOB.job_id), null);
});

Deno.test("PostgREST errors and network failures become StoreError", async () => {
  const refused = fakePostgrest(() =>
    Response.json(
      { code: "23503", message: "violates foreign key constraint" },
      { status: 409 },
    )
  );
  await assert.rejects(
    () =>
      refused.store.upsertCreated({
        jobId: JOB.job_id,
        ownerId: ALICE,
        status: "awaiting_upload",
        metadata: {},
        mastering: null,
        mode: "master",
        previews: false,
      }),
    (error: unknown) =>
      error instanceof StoreError && /409/.test(error.message) &&
      /foreign key/.test(error.message) && !/service-key/.test(error.message),
  );
  const offline = new PostgrestJobStore(
    "https://project.supabase.co",
    "service-key",
    () => Promise.reject(new TypeError("connection refused")),
  );
  await assert.rejects(() => offline.get(JOB.job_id), StoreError);
});
