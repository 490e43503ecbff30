/**
 * The webhook route: Standard Webhooks verification, replay handling and what
 * ends up in the mastering_jobs mirror. Webhooks are signed here with the same
 * `standardwebhooks` package (and scheme) the Python sender uses.
 */

import assert from "node:assert/strict";
import { handler } from "./handler.ts";
import type { JobStore } from "./store.ts";
import {
  ALICE,
  ANALYSIS,
  apiRequest,
  event,
  jobBody,
  legacyJobBody,
  OTHER_SECRET,
  TARGET,
  type TestDeps,
  testDeps,
  webhookRequest,
  withFakeApi,
} from "./testing.ts";

/** A deps whose store holds ALICE's job, as POST would have left it. */
async function depsWithJob(
  status = "processing",
): Promise<{ deps: TestDeps; jobId: string }> {
  const deps = testDeps(null, { routes: "webhook" });
  const jobId = crypto.randomUUID();
  await deps.store.upsertCreated({
    jobId,
    ownerId: ALICE,
    status: "awaiting_upload",
    metadata: { track_id: "t-9" },
    mastering: { loudness: "spotify" },
    mode: "master",
    previews: false,
  });
  if (status !== "awaiting_upload") {
    await deps.store.syncFromApi(ALICE, {
      job_id: jobId,
      status: status as "processing",
      progress: { stage: "matching", percent: 50 },
      error: null,
      results: {},
      metrics: null,
      mastering: null,
      warnings: null,
      analysis: null,
      mode: null,
      previews: null,
    });
  }
  return { deps, jobId };
}

// deno-lint-ignore no-explicit-any
async function json(response: Response): Promise<any> {
  return await response.json();
}

async function assertRefused(
  response: Response,
  code: string,
  status = 400,
): Promise<void> {
  const body = await json(response);
  assert.equal(response.status, status, JSON.stringify(body));
  assert.equal(body.error.code, code);
}

Deno.test("a signed job.succeeded is stored with its results", async () => {
  const { deps, jobId } = await depsWithJob();
  const id = `msg_${jobId}_succeeded`;
  const response = await handler(
    webhookRequest(event("job.succeeded", jobBody(jobId, "succeeded")), { id }),
    deps,
  );
  assert.equal(response.status, 204);
  assert.equal(await response.text(), "");

  const row = await deps.store.get(jobId);
  assert.ok(row !== null);
  assert.equal(row.status, "succeeded");
  assert.equal(row.owner_id, ALICE, "the owner comes from the row");
  assert.deepEqual(row.metadata, { track_id: "t-9" });
  assert.equal(
    (row.results?.wav16 as { url: string }).url,
    `https://results.example/results/${jobId}/mastered.wav?sig=1`,
  );
  assert.deepEqual(row.metrics, {
    duration_s: 8,
    result_lufs: -9.1,
    processing_s: 3.2,
  });
  assert.deepEqual(row.progress, { stage: "done", percent: 100 });
  assert.equal(row.last_webhook_id, id);
});

Deno.test("a signed job.failed is stored with its error", async () => {
  const { deps, jobId } = await depsWithJob("awaiting_upload");
  const response = await handler(
    webhookRequest(event("job.failed", jobBody(jobId, "failed"))),
    deps,
  );
  assert.equal(response.status, 204);
  const row = await deps.store.get(jobId);
  assert.equal(row?.status, "failed");
  assert.deepEqual(row?.error, {
    code: "invalid_audio",
    message: "The target is not audio",
  });
});

Deno.test("signed job.expired and job.cancelled are stored", async () => {
  for (const status of ["expired", "cancelled"]) {
    // Given ALICE's running job
    const { deps, jobId } = await depsWithJob("queued");
    const error = status === "expired"
      ? { code: "upload_expired", message: "The uploads never arrived" }
      : null;
    const id = `msg_${jobId}_${status}`;
    // When the API says it ended this way
    const response = await handler(
      webhookRequest(
        event(`job.${status}`, jobBody(jobId, status, { error })),
        { id },
      ),
      deps,
    );
    // Then the row shows it, as that event left it
    assert.equal(response.status, 204, status);
    const row = await deps.store.get(jobId);
    assert.equal(row?.status, status);
    assert.deepEqual(row?.error, error);
    assert.equal(row?.last_webhook_id, id);
    assert.equal(row?.owner_id, ALICE);
  }
});

Deno.test("a cancelled job takes no other ending, only its own again", async () => {
  // Given ALICE's job that was cancelled
  const { deps, jobId } = await depsWithJob();
  const cancelled = await handler(
    webhookRequest(event("job.cancelled", jobBody(jobId, "cancelled"))),
    deps,
  );
  assert.equal(cancelled.status, 204);
  // When a contradicting ending arrives
  for (const status of ["succeeded", "failed", "expired"]) {
    // Then it is a conflict, and the row stays cancelled
    await assertRefused(
      await handler(
        webhookRequest(event(`job.${status}`, jobBody(jobId, status))),
        deps,
      ),
      "conflict",
      409,
    );
  }
  assert.equal((await deps.store.get(jobId))?.status, "cancelled");
  // And a re-sent job.cancelled under a new id is applied
  const again = await handler(
    webhookRequest(event("job.cancelled", jobBody(jobId, "cancelled"))),
    deps,
  );
  assert.equal(again.status, 204);
});

Deno.test("job.succeeded stores warnings, analysis, options, mode and previews", async () => {
  // Given ALICE's preview job, recorded with the options as asked
  const { deps, jobId } = await depsWithJob();
  const resolved = {
    loudness: "spotify",
    loudness_lufs: -14,
    true_peak_dbtp: -1,
    intensity: 1,
    limiter: "true_peak",
  };
  const warnings = [
    { code: "loudness_not_reached", message: "Reached -14.9 LUFS" },
  ];
  const results = {
    preview_target: { url: "https://r/pt.mp3", expires_at: "t", size: 2 },
    preview_result: {
      url: "https://r/pr.mp3",
      expires_at: "t",
      size: 2,
      lufs: -14.9,
      true_peak_dbtp: -1.1,
    },
  };
  // When it succeeds
  const response = await handler(
    webhookRequest(
      event(
        "job.succeeded",
        jobBody(jobId, "succeeded", {
          mastering: resolved,
          warnings,
          results,
          mode: "preview",
          previews: true,
        }),
      ),
    ),
    deps,
  );
  // Then the row has everything the event carried
  assert.equal(response.status, 204);
  const row = await deps.store.get(jobId);
  assert.deepEqual(row?.mastering, resolved);
  assert.deepEqual(row?.warnings, warnings);
  assert.deepEqual(row?.analysis, ANALYSIS);
  assert.deepEqual(row?.results, results);
  assert.equal(
    (row?.results?.preview_result as { url: string }).url,
    "https://r/pr.mp3",
  );
  assert.equal(row?.mode, "preview");
  assert.equal(row?.previews, true);
});

Deno.test("job.succeeded of an analyze job stores its analysis and no results", async () => {
  // Given ALICE's job, recorded as a master
  const { deps, jobId } = await depsWithJob();
  const analysis = {
    target: ANALYSIS.target,
    reference: ANALYSIS.target,
    band_centres_hz: ANALYSIS.band_centres_hz,
  };
  // When the API says it succeeded as an analyze job, with measurements only
  const response = await handler(
    webhookRequest(
      event(
        "job.succeeded",
        jobBody(jobId, "succeeded", {
          mode: "analyze",
          results: {},
          metrics: null,
          analysis,
        }),
      ),
    ),
    deps,
  );
  // Then the row holds the analysis, the mode, and no result files
  assert.equal(response.status, 204);
  const row = await deps.store.get(jobId);
  assert.equal(row?.status, "succeeded");
  assert.deepEqual(row?.analysis, analysis);
  assert.equal(row?.mode, "analyze");
  assert.deepEqual(row?.results, {});
  assert.equal(row?.previews, false);
});

Deno.test("a job body whose previews is not a boolean is refused", async () => {
  const { deps, jobId } = await depsWithJob();
  const response = await handler(
    webhookRequest(
      event("job.succeeded", jobBody(jobId, "succeeded", { previews: "yes" })),
    ),
    deps,
  );
  await assertRefused(response, "invalid_payload");
  assert.equal((await deps.store.get(jobId))?.status, "processing");
});

Deno.test("an event without the new fields keeps the options recorded at creation", async () => {
  // Given a job recorded with {loudness: "spotify"} as asked
  const { deps, jobId } = await depsWithJob();
  // When an API from before options and modes says it succeeded
  const response = await handler(
    webhookRequest(event("job.succeeded", legacyJobBody(jobId, "succeeded"))),
    deps,
  );
  // Then it is applied and the recorded options and mode stay
  assert.equal(response.status, 204);
  const row = await deps.store.get(jobId);
  assert.equal(row?.status, "succeeded");
  assert.deepEqual(row?.mastering, { loudness: "spotify" });
  assert.equal(row?.mode, "master");
  assert.equal(row?.previews, false);
  assert.deepEqual(row?.warnings, []);
  assert.equal(row?.analysis, null);
});

Deno.test("a tampered body is refused and changes nothing", async () => {
  const { deps, jobId } = await depsWithJob();
  const signed = event("job.succeeded", jobBody(jobId, "succeeded"));
  const genuine = webhookRequest(signed);
  const tampered = new Request(genuine.url, {
    method: "POST",
    headers: genuine.headers,
    body: signed.replace("mastered.wav", "evil.wav"),
  });
  await assertRefused(await handler(tampered, deps), "invalid_signature");
  assert.equal((await deps.store.get(jobId))?.status, "processing");
});

Deno.test("a stale or future timestamp is refused", async () => {
  const { deps, jobId } = await depsWithJob();
  const body = event("job.succeeded", jobBody(jobId, "succeeded"));
  const tenMinutes = 10 * 60 * 1000;
  await assertRefused(
    await handler(
      webhookRequest(body, { at: new Date(Date.now() - tenMinutes) }),
      deps,
    ),
    "invalid_signature",
  );
  await assertRefused(
    await handler(
      webhookRequest(body, { at: new Date(Date.now() + tenMinutes) }),
      deps,
    ),
    "invalid_signature",
  );
  assert.equal((await deps.store.get(jobId))?.status, "processing");
});

Deno.test("a body signed with another secret is refused", async () => {
  const { deps, jobId } = await depsWithJob();
  await assertRefused(
    await handler(
      webhookRequest(event("job.succeeded", jobBody(jobId, "succeeded")), {
        secret: OTHER_SECRET,
      }),
      deps,
    ),
    "invalid_signature",
  );
  assert.equal((await deps.store.get(jobId))?.status, "processing");
});

Deno.test("missing or malformed signature headers are refused", async () => {
  const { deps, jobId } = await depsWithJob();
  const body = event("job.succeeded", jobBody(jobId, "succeeded"));
  const good = webhookRequest(body);
  for (
    const [name, change] of [
      ["no id", (h: Headers) => h.delete("webhook-id")],
      ["no timestamp", (h: Headers) => h.delete("webhook-timestamp")],
      ["no signature", (h: Headers) => h.delete("webhook-signature")],
      [
        "timestamp with junk",
        (h: Headers) =>
          h.set("webhook-timestamp", `${h.get("webhook-timestamp")}abc`),
      ],
      ["id too long", (h: Headers) => h.set("webhook-id", "x".repeat(300))],
      ["v2 only", (h: Headers) => h.set("webhook-signature", "v2,abc")],
    ] as const
  ) {
    const headers = new Headers(good.headers);
    change(headers);
    const response = await handler(
      new Request(good.url, { method: "POST", headers, body }),
      deps,
    );
    assert.equal(response.status, 400, name);
    await assertRefused(response, "invalid_signature");
  }
});

Deno.test("one valid signature among several is enough (secret rotation)", async () => {
  const { deps, jobId } = await depsWithJob();
  const body = event("job.succeeded", jobBody(jobId, "succeeded"));
  const good = webhookRequest(body, { id: "msg_rotation" });
  const other = webhookRequest(body, {
    id: "msg_rotation",
    secret: OTHER_SECRET,
  });
  const headers = new Headers(good.headers);
  headers.set(
    "webhook-signature",
    `${other.headers.get("webhook-signature")} ${
      good.headers.get("webhook-signature")
    }`,
  );
  const response = await handler(
    new Request(good.url, { method: "POST", headers, body }),
    deps,
  );
  assert.equal(response.status, 204);
});

Deno.test("a replayed webhook-id is acknowledged but not applied again", async () => {
  const { deps, jobId } = await depsWithJob();
  const id = `msg_${jobId}_succeeded`;
  const body = event("job.succeeded", jobBody(jobId, "succeeded"));
  const first = await handler(webhookRequest(body, { id }), deps);
  assert.equal(first.status, 204);
  const applied = await deps.store.get(jobId);

  // The sender re-sends the same id (fresh timestamp and signature) when our
  // first answer got lost; an attacker would replay the captured request.
  const again = await handler(webhookRequest(body, { id }), deps);
  assert.equal(again.status, 200);
  assert.deepEqual(await json(again), { status: "duplicate" });
  assert.deepEqual(await deps.store.get(jobId), applied, "row untouched");

  // Even with a changed (validly signed) body, the id was used up.
  const changed = event(
    "job.succeeded",
    jobBody(jobId, "succeeded", { metrics: { duration_s: 1 } }),
  );
  const replay = await handler(webhookRequest(changed, { id }), deps);
  assert.equal(replay.status, 200);
  await replay.body?.cancel();
  assert.deepEqual((await deps.store.get(jobId))?.metrics, applied?.metrics);
});

Deno.test("a webhook for a job without a row is accepted and ignored", async () => {
  const { deps } = await depsWithJob();
  const stranger = crypto.randomUUID();
  const response = await handler(
    webhookRequest(event("job.failed", jobBody(stranger, "failed"))),
    deps,
  );
  assert.equal(response.status, 202);
  assert.deepEqual(await json(response), {
    status: "ignored",
    reason: "unknown_job",
  });
  assert.equal(await deps.store.get(stranger), null, "no ownerless row");
  assert.ok(deps.logs.some((entry) => entry.level === "warn"));
});

Deno.test("a webhook contradicting an ended job is a 409", async () => {
  const { deps, jobId } = await depsWithJob();
  const succeeded = await handler(
    webhookRequest(event("job.succeeded", jobBody(jobId, "succeeded"))),
    deps,
  );
  assert.equal(succeeded.status, 204);
  await assertRefused(
    await handler(
      webhookRequest(event("job.failed", jobBody(jobId, "failed"))),
      deps,
    ),
    "conflict",
    409,
  );
  assert.equal((await deps.store.get(jobId))?.status, "succeeded");
});

Deno.test("signed but malformed bodies are refused as invalid_payload", async () => {
  const { deps, jobId } = await depsWithJob();
  const bodies: [string, string][] = [
    ["not JSON", "job.succeeded"],
    ["empty", ""],
    ["unknown type", event("job.progress", jobBody(jobId, "processing"))],
    ["type/status mismatch", event("job.succeeded", jobBody(jobId, "failed"))],
    [
      "cancelled/expired mismatch",
      event("job.cancelled", jobBody(jobId, "expired")),
    ],
    [
      "warnings not a list",
      event("job.failed", jobBody(jobId, "failed", { warnings: "loud" })),
    ],
    [
      "warnings not objects",
      event("job.failed", jobBody(jobId, "failed", { warnings: ["loud"] })),
    ],
    [
      "mastering not an object",
      event("job.failed", jobBody(jobId, "failed", { mastering: "spotify" })),
    ],
    [
      "analysis not an object",
      event("job.failed", jobBody(jobId, "failed", { analysis: [1] })),
    ],
    [
      "mode not a string",
      event("job.failed", jobBody(jobId, "failed", { mode: 2 })),
    ],
    ["no data", JSON.stringify({ type: "job.failed" })],
    ["bad job id", event("job.failed", jobBody("../etc", "failed"))],
    [
      "results not an object",
      event("job.succeeded", jobBody(jobId, "succeeded", { results: [1] })),
    ],
  ];
  for (const [name, body] of bodies) {
    const response = await handler(webhookRequest(body), deps);
    assert.equal(response.status, 400, name);
    await assertRefused(response, "invalid_payload");
  }
  assert.equal((await deps.store.get(jobId))?.status, "processing");
});

Deno.test("an oversized webhook body is refused unread", async () => {
  const { deps, jobId } = await depsWithJob();
  const body = event(
    "job.succeeded",
    jobBody(jobId, "succeeded", { metadata: { pad: "x".repeat(300_000) } }),
  );
  const response = await handler(webhookRequest(body), deps);
  assert.equal(response.status, 413);
  await response.body?.cancel();
});

Deno.test("a database failure is a 500, so the sender retries", async () => {
  const { deps, jobId } = await depsWithJob();
  const down: JobStore = {
    upsertCreated: () => Promise.reject(new Error("down")),
    applyWebhook: () => Promise.reject(new Error("down")),
    syncFromApi: () => Promise.reject(new Error("down")),
    deleteOwned: () => Promise.reject(new Error("down")),
    get: () => Promise.reject(new Error("down")),
  };
  const response = await handler(
    webhookRequest(event("job.succeeded", jobBody(jobId, "succeeded"))),
    { ...deps, store: down },
  );
  assert.equal(response.status, 500);
  await response.body?.cancel();
});

Deno.test("the webhook deployment serves nothing but the webhook", async () => {
  await withFakeApi(async (api) => {
    // Even with an API configured, a JWT-bearing create never reaches it:
    // this deployment runs without the gateway's JWT check.
    const deps = { ...testDeps(api.url, { routes: "webhook" }) };
    const create = await handler(
      apiRequest("POST", { body: { target: TARGET, preset: "balanced" } }),
      deps,
    );
    await assertRefused(create, "invalid_signature");
    const get = await handler(
      apiRequest("GET", { query: `?job_id=${ALICE}` }),
      deps,
    );
    await assertRefused(get, "method_not_allowed", 405);
    assert.equal(api.requests.length, 0);
  });
});

Deno.test("the main deployment also takes the webhook at /webhook", async () => {
  const { jobId, deps } = await depsWithJob();
  const response = await handler(
    webhookRequest(event("job.succeeded", jobBody(jobId, "succeeded")), {
      url: "http://127.0.0.1/ai-mastering/webhook",
    }),
    { ...deps, routes: "all" },
  );
  assert.equal(response.status, 204);
  assert.equal((await deps.store.get(jobId))?.status, "succeeded");
});
