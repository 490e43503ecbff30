/**
 * The routes that manage a user's jobs: list, cancel and delete, against the
 * fake mastering API on 127.0.0.1. The owner always comes from the JWT.
 */

import assert from "node:assert/strict";
import { handler } from "./handler.ts";
import type { JobStore } from "./store.ts";
import {
  ALICE,
  apiRequest,
  BOB,
  type FakeMasteringApi,
  jobBody,
  jwtFor,
  TARGET,
  type TestDeps,
  testDeps,
  withFakeApi,
} from "./testing.ts";

// deno-lint-ignore no-explicit-any
async function json(response: Response): Promise<any> {
  return await response.json();
}

async function assertError(
  response: Response,
  status: number,
  code: string,
): Promise<void> {
  const body = await json(response);
  assert.equal(response.status, status, JSON.stringify(body));
  assert.equal(body.error.code, code);
  assert.equal(typeof body.error.message, "string");
  assert.equal(response.headers.get("Access-Control-Allow-Origin"), "*");
}

/** A job created through the function for `user` (ALICE by default). */
async function createdJob(deps: TestDeps, user = ALICE): Promise<string> {
  const response = await handler(
    apiRequest("POST", {
      body: { target: TARGET, preset: "balanced", metadata: { n: user } },
      token: jwtFor(user),
    }),
    deps,
  );
  const body = await json(response);
  assert.equal(response.status, 201, JSON.stringify(body));
  return body.job_id;
}

function setStatus(api: FakeMasteringApi, jobId: string, status: string) {
  api.jobs.get(jobId)!.body = jobBody(jobId, status);
}

// --- list -------------------------------------------------------------------

Deno.test("GET /jobs lists the user's jobs from the API, newest first", async () => {
  await withFakeApi(async (api) => {
    // Given three jobs of ALICE's and one of BOB's
    const deps = testDeps(api.url);
    const first = await createdJob(deps);
    const second = await createdJob(deps);
    const third = await createdJob(deps);
    await createdJob(deps, BOB);

    // When ALICE lists her jobs (and tries to name another owner)
    const response = await handler(
      apiRequest("GET", { path: "/jobs", query: `?owner=${BOB}` }),
      deps,
    );
    const page = await json(response);

    // Then she gets hers only, newest first, as the API's summaries
    assert.equal(response.status, 200, JSON.stringify(page));
    assert.equal(response.headers.get("Access-Control-Allow-Origin"), "*");
    assert.deepEqual(
      page.jobs.map((job: { job_id: string }) => job.job_id),
      [third, second, first],
    );
    assert.deepEqual(Object.keys(page.jobs[0]).sort(), [
      "created_at",
      "error",
      "job_id",
      "metadata",
      "status",
      "updated_at",
    ]);
    assert.deepEqual(page.jobs[0].metadata, { n: ALICE });
    assert.equal(page.next_cursor, null);
    // And the owner went as X-Owner-Id from the JWT; the query's was dropped
    const sent = api.requests.at(-1)!;
    assert.equal(sent.path, "/jobs");
    assert.equal(sent.headers.get("x-owner-id"), ALICE);
    assert.equal(sent.method, "GET");
  });
});

Deno.test("GET /jobs pages with limit and cursor and filters by status", async () => {
  await withFakeApi(async (api) => {
    // Given three jobs, the oldest of which was cancelled
    const deps = testDeps(api.url);
    const oldest = await createdJob(deps);
    const middle = await createdJob(deps);
    const newest = await createdJob(deps);
    setStatus(api, oldest, "cancelled");

    // When ALICE reads two at a time
    const firstPage = await json(
      await handler(
        apiRequest("GET", { path: "/jobs", query: "?limit=2&status=" }),
        deps,
      ),
    );
    const ids = (page: { jobs: { job_id: string }[] }) =>
      page.jobs.map((job) => job.job_id);
    // Then the pages follow each other through next_cursor
    assert.deepEqual(ids(firstPage), [newest, middle]);
    assert.equal(typeof firstPage.next_cursor, "string");
    const secondPage = await json(
      await handler(
        apiRequest("GET", {
          path: "/jobs",
          query: `?limit=2&cursor=${encodeURIComponent(firstPage.next_cursor)}`,
        }),
        deps,
      ),
    );
    assert.deepEqual(ids(secondPage), [oldest]);
    assert.equal(secondPage.next_cursor, null);

    // And a status filter reaches the API
    const cancelled = await json(
      await handler(
        apiRequest("GET", { path: "/jobs", query: "?status=cancelled" }),
        deps,
      ),
    );
    assert.deepEqual(ids(cancelled), [oldest]);
    assert.equal(cancelled.jobs[0].status, "cancelled");
  });
});

Deno.test("GET /jobs passes the API's refusal of a bad limit or status through", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    for (const query of ["?limit=0", "?limit=101", "?status=done"]) {
      await assertError(
        await handler(apiRequest("GET", { path: "/jobs", query }), deps),
        400,
        "invalid_request",
      );
    }
  });
});

Deno.test("GET /jobs needs a signed-in user and a well-formed answer", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    // An anon-key caller has no owner to list for
    await assertError(
      await handler(
        apiRequest("GET", {
          path: "/jobs",
          token: jwtFor(undefined, { role: "anon" }),
        }),
        deps,
      ),
      401,
      "unauthorized",
    );
    assert.equal(api.requests.length, 0);

    api.override = { status: 200, body: { items: [] } };
    await assertError(
      await handler(apiRequest("GET", { path: "/jobs" }), deps),
      502,
      "upstream_error",
    );
  });
});

// --- cancel -----------------------------------------------------------------

Deno.test("POST /jobs/<id>/cancel cancels the user's job and updates its row", async () => {
  await withFakeApi(async (api) => {
    // Given ALICE's job that is processing
    const deps = testDeps(api.url);
    const jobId = await createdJob(deps);
    setStatus(api, jobId, "processing");

    // When she cancels it
    const response = await handler(
      apiRequest("POST", { path: `/jobs/${jobId}/cancel` }),
      deps,
    );
    const body = await json(response);

    // Then the answer is the API's job body, cancelled
    assert.equal(response.status, 200, JSON.stringify(body));
    assert.equal(body.job_id, jobId);
    assert.equal(body.status, "cancelled");
    const sent = api.requests.at(-1)!;
    assert.equal(sent.method, "POST");
    assert.equal(sent.path, `/jobs/${jobId}/cancel`);
    assert.equal(sent.headers.get("x-owner-id"), ALICE);
    // And the row says so at once, without waiting for job.cancelled
    const row = await deps.store.get(jobId);
    assert.equal(row?.status, "cancelled");
    assert.deepEqual(row?.progress, { stage: "cancelled", percent: 0 });
    assert.equal(row?.owner_id, ALICE);
  });
});

Deno.test("cancelling an ended job is the API's 409 job_finished", async () => {
  await withFakeApi(async (api) => {
    // Given ALICE's job that already succeeded (and one she cancelled)
    const deps = testDeps(api.url);
    const done = await createdJob(deps);
    setStatus(api, done, "succeeded");
    const cancelled = await createdJob(deps);
    const once = await handler(
      apiRequest("POST", { path: `/jobs/${cancelled}/cancel` }),
      deps,
    );
    assert.equal(once.status, 200);
    await once.body?.cancel();

    // When she cancels them
    for (const jobId of [done, cancelled]) {
      const response = await handler(
        apiRequest("POST", { path: `/jobs/${jobId}/cancel` }),
        deps,
      );
      // Then the API's conflict reaches her as is
      await assertError(response, 409, "job_finished");
    }
    // And the rows are not touched by a refused cancel
    assert.equal((await deps.store.get(done))?.status, "awaiting_upload");
    assert.equal((await deps.store.get(cancelled))?.status, "cancelled");
  });
});

Deno.test("another user cannot cancel a job: 404, nothing changes", async () => {
  await withFakeApi(async (api) => {
    // Given ALICE's running job
    const deps = testDeps(api.url);
    const jobId = await createdJob(deps);
    setStatus(api, jobId, "queued");
    // When BOB tries to cancel it
    const response = await handler(
      apiRequest("POST", { path: `/jobs/${jobId}/cancel`, token: jwtFor(BOB) }),
      deps,
    );
    // Then he gets the API's 404, as if it did not exist
    await assertError(response, 404, "not_found");
    assert.equal(api.requests.at(-1)?.headers.get("x-owner-id"), BOB);
    assert.equal(api.jobs.get(jobId)?.body.status, "queued");
    assert.equal((await deps.store.get(jobId))?.status, "awaiting_upload");
  });
});

Deno.test("a cancel still answers when its row cannot be updated", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const jobId = await createdJob(deps);
    const store = deps.store;
    const flaky: JobStore = {
      upsertCreated: (job) => store.upsertCreated(job),
      applyWebhook: (id, job) => store.applyWebhook(id, job),
      syncFromApi: () => Promise.reject(new Error("timeout")),
      deleteOwned: (owner, id) => store.deleteOwned(owner, id),
      get: (id) => store.get(id),
    };
    const response = await handler(
      apiRequest("POST", { path: `/jobs/${jobId}/cancel` }),
      { ...deps, store: flaky },
    );
    // The job is cancelled in the API: that is the answer; the
    // job.cancelled webhook brings the row along later.
    assert.equal(response.status, 200);
    assert.equal((await json(response)).status, "cancelled");
    assert.ok(
      deps.logs.some((entry) =>
        entry.level === "warn" && entry.message === "could not sync a job row"
      ),
    );
  });
});

// --- delete -----------------------------------------------------------------

Deno.test("DELETE /jobs/<id> deletes the job in the API and its row", async () => {
  await withFakeApi(async (api) => {
    // Given ALICE's running job
    const deps = testDeps(api.url);
    const jobId = await createdJob(deps);
    setStatus(api, jobId, "processing");

    // When she deletes it
    const response = await handler(
      apiRequest("DELETE", { path: `/jobs/${jobId}` }),
      deps,
    );

    // Then 204, the API deleted it for her, and the row is gone
    assert.equal(response.status, 204);
    assert.equal(await response.text(), "");
    assert.equal(response.headers.get("Access-Control-Allow-Origin"), "*");
    const sent = api.requests.at(-1)!;
    assert.equal(sent.method, "DELETE");
    assert.equal(sent.path, `/jobs/${jobId}`);
    assert.equal(sent.headers.get("x-owner-id"), ALICE);
    assert.equal(api.jobs.has(jobId), false);
    assert.equal(await deps.store.get(jobId), null);

    // And afterwards it is not found
    await assertError(
      await handler(apiRequest("GET", { path: `/jobs/${jobId}` }), deps),
      404,
      "not_found",
    );
  });
});

Deno.test("another user cannot delete a job: 404, job and row stay", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const jobId = await createdJob(deps);
    const response = await handler(
      apiRequest("DELETE", { path: `/jobs/${jobId}`, token: jwtFor(BOB) }),
      deps,
    );
    await assertError(response, 404, "not_found");
    assert.equal(api.jobs.has(jobId), true);
    assert.equal((await deps.store.get(jobId))?.owner_id, ALICE);

    // A job no one has is a 404 too
    await assertError(
      await handler(
        apiRequest("DELETE", { path: `/jobs/${crypto.randomUUID()}` }),
        deps,
      ),
      404,
      "not_found",
    );
  });
});

Deno.test("DELETE of a job the API no longer has removes the stale row", async () => {
  await withFakeApi(async (api) => {
    // Given a row of ALICE's whose job the API no longer has
    const deps = testDeps(api.url);
    const jobId = await createdJob(deps);
    api.jobs.delete(jobId);
    // When she deletes it
    const response = await handler(
      apiRequest("DELETE", { path: `/jobs/${jobId}` }),
      deps,
    );
    // Then the row goes and the delete succeeds
    assert.equal(response.status, 204);
    await response.body?.cancel();
    assert.equal(await deps.store.get(jobId), null);
  });
});

Deno.test("a DELETE whose row removal failed can simply be retried", async () => {
  await withFakeApi(async (api) => {
    // Given a database that fails the first row removal
    const deps = testDeps(api.url);
    const jobId = await createdJob(deps);
    const store = deps.store;
    let failures = 1;
    const flaky: JobStore = {
      upsertCreated: (job) => store.upsertCreated(job),
      applyWebhook: (id, job) => store.applyWebhook(id, job),
      syncFromApi: (owner, job) => store.syncFromApi(owner, job),
      deleteOwned: (owner, id) =>
        failures-- > 0
          ? Promise.reject(new Error("database down"))
          : store.deleteOwned(owner, id),
      get: (id) => store.get(id),
    };
    // When she deletes the job
    const first = await handler(
      apiRequest("DELETE", { path: `/jobs/${jobId}` }),
      { ...deps, store: flaky },
    );
    // Then she is told to try again; the job is gone, its row not yet
    await assertError(first, 500, "internal_error");
    assert.equal(api.jobs.has(jobId), false);
    assert.notEqual(await deps.store.get(jobId), null);
    // And the retry (the API now answers 404) removes the row
    const retry = await handler(
      apiRequest("DELETE", { path: `/jobs/${jobId}` }),
      { ...deps, store: flaky },
    );
    assert.equal(retry.status, 204);
    await retry.body?.cancel();
    assert.equal(await deps.store.get(jobId), null);
  });
});

Deno.test("DELETE needs the job store configured before it calls the API", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const jobId = await createdJob(deps);
    const response = await handler(
      apiRequest("DELETE", { path: `/jobs/${jobId}` }),
      { ...deps, store: null },
    );
    await assertError(response, 500, "misconfigured");
    assert.equal(api.jobs.has(jobId), true, "not deleted behind the row");
  });
});

// --- routing ----------------------------------------------------------------

Deno.test("job routes check the id, the method and the JWT first", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    for (
      const request of [
        apiRequest("POST", { path: "/jobs/not-a-uuid/cancel" }),
        apiRequest("DELETE", { path: "/jobs/..%2Fpresets" }),
        apiRequest("GET", { path: "/jobs/123" }),
      ]
    ) {
      await assertError(await handler(request, deps), 400, "invalid_request");
    }
    for (
      const request of [
        apiRequest("DELETE", { path: `/jobs/${ALICE}`, token: null }),
        apiRequest("POST", { path: `/jobs/${ALICE}/cancel`, token: "abc" }),
      ]
    ) {
      const response = await handler(request, deps);
      assert.equal(response.headers.get("www-authenticate"), "Bearer");
      await assertError(response, 401, "unauthorized");
    }
    assert.equal(api.requests.length, 0);

    const put = await handler(
      apiRequest("PUT", { path: `/jobs/${ALICE}`, body: {} }),
      deps,
    );
    assert.equal(put.headers.get("allow"), "GET, DELETE, OPTIONS");
    await assertError(put, 405, "method_not_allowed");
    const getCancel = await handler(
      apiRequest("GET", { path: `/jobs/${ALICE}/cancel` }),
      deps,
    );
    assert.equal(getCancel.headers.get("allow"), "POST, OPTIONS");
    await assertError(getCancel, 405, "method_not_allowed");
    await assertError(
      await handler(apiRequest("DELETE", { path: "/jobs" }), deps),
      405,
      "method_not_allowed",
    );
    await assertError(
      await handler(
        apiRequest("POST", { path: `/jobs/${ALICE}/restart` }),
        deps,
      ),
      404,
      "not_found",
    );
  });
});

Deno.test("/jobs also creates, and /jobs/<id> also reads, like the root", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const response = await handler(
      apiRequest("POST", {
        path: "/jobs",
        body: { target: TARGET, preset: "balanced" },
      }),
      deps,
    );
    const created = await json(response);
    assert.equal(response.status, 201, JSON.stringify(created));
    assert.equal((await deps.store.get(created.job_id))?.owner_id, ALICE);

    const read = await handler(
      apiRequest("GET", { path: `/jobs/${created.job_id.toUpperCase()}` }),
      deps,
    );
    const job = await json(read);
    assert.equal(read.status, 200);
    assert.equal(job.job_id, created.job_id);
    assert.equal(api.requests.at(-1)?.path, `/jobs/${created.job_id}`);
  });
});

Deno.test("the preflight allows DELETE for the browser", async () => {
  const response = await handler(
    new Request(`http://127.0.0.1/ai-mastering/jobs/${ALICE}`, {
      method: "OPTIONS",
      headers: {
        "Origin": "https://spectrum.example",
        "Access-Control-Request-Method": "DELETE",
      },
    }),
    testDeps(null),
  );
  assert.equal(response.status, 200);
  await response.body?.cancel();
  const allowed = (response.headers.get("Access-Control-Allow-Methods") ?? "")
    .split(",").map((method) => method.trim());
  assert.ok(allowed.includes("DELETE"), allowed.join());
});

Deno.test("the webhook deployment serves none of the job routes", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url, { routes: "webhook" });
    // Everything there is the webhook: a POST must be signed, the rest is 405.
    const cases: [Request, number, string][] = [
      [apiRequest("GET", { path: "/jobs" }), 405, "method_not_allowed"],
      [
        apiRequest("POST", { path: `/jobs/${ALICE}/cancel` }),
        400,
        "invalid_signature",
      ],
      [
        apiRequest("DELETE", { path: `/jobs/${ALICE}` }),
        405,
        "method_not_allowed",
      ],
    ];
    for (const [request, status, code] of cases) {
      await assertError(await handler(request, deps), status, code);
    }
    assert.equal(api.requests.length, 0);
  });
});
