/**
 * The API routes of the handler, against a fake mastering API on 127.0.0.1.
 */

import assert from "node:assert/strict";
import { depsFromEnv } from "./deps.ts";
import { handler } from "./handler.ts";
import { MasteringApi } from "./mastering_api.ts";
import type { CreatedJob, JobStore } from "./store.ts";
import {
  ALICE,
  ANALYSIS,
  API_KEY,
  apiRequest,
  BOB,
  FUNCTION_URL,
  jobBody,
  jwtFor,
  legacyJobBody,
  TARGET,
  testDeps,
  WEBHOOK_SECRET,
  withFakeApi,
} from "./testing.ts";

const CORS_ORIGIN = "Access-Control-Allow-Origin";

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
  assert.equal(response.headers.get(CORS_ORIGIN), "*");
  assert.equal(response.headers.get("content-type"), "application/json");
}

Deno.test("OPTIONS answers the CORS preflight on every route", async () => {
  const deps = testDeps(null);
  for (const path of ["", "/presets", "/webhook", "/anything"]) {
    const response = await handler(
      new Request(`${FUNCTION_URL}${path}`, {
        method: "OPTIONS",
        headers: {
          "Origin": "https://spectrum.example",
          "Access-Control-Request-Method": "POST",
          "Access-Control-Request-Headers": "authorization, content-type",
        },
      }),
      deps,
    );
    assert.equal(response.status, 200);
    assert.equal(await response.text(), "ok");
    assert.equal(response.headers.get(CORS_ORIGIN), "*");
    assert.equal(
      response.headers.get("Access-Control-Allow-Headers"),
      "authorization, x-client-info, apikey, content-type",
    );
    assert.match(
      response.headers.get("Access-Control-Allow-Methods") ?? "",
      /POST/,
    );
  }
});

Deno.test("POST creates a job for the JWT's user and records it", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const request = {
      target: TARGET,
      preset: "balanced",
      outputs: ["wav16", "mp3"],
      metadata: { track_id: "t-1" },
    };
    const response = await handler(
      apiRequest("POST", { body: request }),
      deps,
    );
    const body = await json(response);
    assert.equal(response.status, 201, JSON.stringify(body));
    assert.equal(response.headers.get(CORS_ORIGIN), "*");
    assert.deepEqual(Object.keys(body).sort(), [
      "job_id",
      "mode",
      "previews",
      "status",
      "uploads",
    ]);
    assert.equal(body.status, "awaiting_upload");
    // A plain master with no previews, as nothing else was asked
    assert.equal(body.mode, "master");
    assert.equal(body.previews, false);
    assert.equal(
      body.uploads.target.fields.key,
      `uploads/${body.job_id}/target`,
    );
    assert.equal(typeof body.uploads.target.url, "string");

    // What reached the API: its key, the user as owner, the body unchanged.
    assert.equal(api.requests.length, 1);
    const sent = api.requests[0];
    assert.equal(sent.method, "POST");
    assert.equal(sent.path, "/jobs");
    assert.equal(sent.headers.get("x-api-key"), API_KEY);
    assert.equal(sent.headers.get("x-owner-id"), ALICE);
    assert.deepEqual(sent.body, request);

    const row = await deps.store.get(body.job_id);
    assert.ok(row !== null);
    assert.equal(row.owner_id, ALICE);
    assert.equal(row.status, "awaiting_upload");
    assert.deepEqual(row.metadata, { track_id: "t-1" });
    assert.deepEqual(row.progress, { stage: "awaiting_upload", percent: 0 });
    assert.equal(row.mode, "master");
    assert.equal(row.previews, false);
  });
});

Deno.test("POST with a reference hands out both uploads", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const response = await handler(
      apiRequest("POST", { body: { target: TARGET, reference: TARGET } }),
      deps,
    );
    const body = await json(response);
    assert.equal(response.status, 201);
    assert.deepEqual(Object.keys(body.uploads).sort(), ["reference", "target"]);
    assert.deepEqual((await deps.store.get(body.job_id))?.metadata, {});
  });
});

Deno.test("POST passes mastering options, previews and mode through and records them", async () => {
  await withFakeApi(async (api) => {
    // Given a signed-in user asking for Spotify loudness, a lighter EQ,
    // previews, and only the preview window mastered
    const deps = testDeps(api.url);
    const request = {
      target: TARGET,
      reference: TARGET,
      outputs: ["mp3"],
      mastering: { loudness: "spotify", intensity: 0.7, limiter: "true_peak" },
      previews: true,
      mode: "preview",
    };
    // When the job is created
    const response = await handler(apiRequest("POST", { body: request }), deps);
    const created = await json(response);
    assert.equal(response.status, 201, JSON.stringify(created));

    // Then the API got the body unchanged
    assert.deepEqual(api.requests[0].body, request);
    // And the user is told what the job will render
    assert.equal(created.mode, "preview");
    assert.equal(created.previews, true);
    // And the row records the options as asked, the mode and the previews
    let row = await deps.store.get(created.job_id);
    assert.deepEqual(row?.mastering, request.mastering);
    assert.equal(row?.mode, "preview");
    assert.equal(row?.previews, true);
    assert.deepEqual(row?.warnings, []);
    assert.equal(row?.analysis, null);

    // When the owner polls, the row takes the options as the API resolved them
    await handler(
      apiRequest("GET", { query: `?job_id=${created.job_id}` }),
      deps,
    );
    row = await deps.store.get(created.job_id);
    assert.deepEqual(row?.mastering, {
      loudness: "spotify",
      loudness_lufs: -14,
      true_peak_dbtp: -1,
      intensity: 0.7,
      limiter: "true_peak",
    });
    assert.equal(row?.mode, "preview");
  });
});

Deno.test("POST records the API's own echo of options and mode when it gives one", async () => {
  await withFakeApi(async (api) => {
    // Given an API whose 201 already carries the resolved options
    const deps = testDeps(api.url);
    const jobId = crypto.randomUUID();
    const resolved = {
      loudness: -12,
      loudness_lufs: -12,
      true_peak_dbtp: -0.5,
      intensity: 1,
      limiter: "true_peak",
    };
    api.override = {
      status: 201,
      body: {
        job_id: jobId,
        status: "awaiting_upload",
        uploads: { target: { url: "u", fields: {}, expires_at: "t" } },
        mastering: resolved,
        mode: "master",
      },
    };
    // When a job is created with options as asked
    const response = await handler(
      apiRequest("POST", {
        body: {
          target: TARGET,
          preset: "balanced",
          mastering: { loudness: -12, true_peak_dbtp: -0.5 },
        },
      }),
      deps,
    );
    assert.equal(response.status, 201);
    await response.body?.cancel();
    // Then the row holds the API's resolution, not the request
    const row = await deps.store.get(jobId);
    assert.deepEqual(row?.mastering, resolved);
    assert.equal(row?.mode, "master");
  });
});

Deno.test("POST in analyze mode needs neither reference nor preset", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    // Given a request that only wants the target measured
    const measureOnly = { target: TARGET, mode: "analyze" };
    // When it is sent
    const response = await handler(
      apiRequest("POST", { body: measureOnly }),
      deps,
    );
    const created = await json(response);
    // Then the job is created with one upload, and recorded as analyze
    assert.equal(response.status, 201, JSON.stringify(created));
    assert.deepEqual(Object.keys(created.uploads), ["target"]);
    assert.deepEqual(api.requests[0].body, measureOnly);
    const row = await deps.store.get(created.job_id);
    assert.equal(row?.mode, "analyze");
    assert.equal(row?.mastering, null, "no options were asked");

    // And a reference may still be given, to be measured too
    const withReference = await handler(
      apiRequest("POST", {
        body: { target: TARGET, reference: TARGET, mode: "analyze" },
      }),
      deps,
    );
    const measured = await json(withReference);
    assert.equal(withReference.status, 201);
    assert.deepEqual(Object.keys(measured.uploads).sort(), [
      "reference",
      "target",
    ]);
  });
});

Deno.test("a preview job is recorded as rendering previews without asking", async () => {
  await withFakeApi(async (api) => {
    // Given a request for mode "preview" that does not set previews
    const deps = testDeps(api.url);
    const response = await handler(
      apiRequest("POST", {
        body: { target: TARGET, preset: "balanced", mode: "preview" },
      }),
      deps,
    );
    const created = await json(response);
    assert.equal(response.status, 201, JSON.stringify(created));
    // Then the answer and the row say previews are coming: they are the
    // only results of a preview job
    assert.equal(created.previews, true);
    assert.equal((await deps.store.get(created.job_id))?.previews, true);
    // And the API got the request as sent, nothing added
    assert.deepEqual(api.requests[0].body, {
      target: TARGET,
      preset: "balanced",
      mode: "preview",
    });
  });
});

Deno.test("POST refuses a body that names an owner: the owner is the JWT's user", async () => {
  await withFakeApi(async (api) => {
    // Given ALICE signed in, naming BOB as the owner in every way she might
    const deps = testDeps(api.url);
    for (const field of ["owner_id", "owner", "user_id"]) {
      const response = await handler(
        apiRequest("POST", {
          body: { target: TARGET, preset: "balanced", [field]: BOB },
        }),
        deps,
      );
      // Then she is told why, and nothing reaches the API or the table
      const body = await json(response);
      assert.equal(response.status, 400, field);
      assert.equal(body.error.code, "invalid_request");
      assert.match(
        body.error.message,
        new RegExp(`^${field} cannot be given: .*signed-in user`),
      );
    }
    assert.equal(api.requests.length, 0);
    assert.equal(deps.store.rows.size, 0);
  });
});

Deno.test("POST takes null options as the API does: the defaults", async () => {
  await withFakeApi(async (api) => {
    // Given options set to null, which the API reads as "the default"
    const deps = testDeps(api.url);
    const request = {
      target: TARGET,
      preset: "balanced",
      mastering: {
        loudness: null,
        true_peak_dbtp: null,
        intensity: null,
        limiter: null,
      },
    };
    // When the job is created
    const response = await handler(apiRequest("POST", { body: request }), deps);
    // Then the function does not refuse what the API accepts
    assert.equal(response.status, 201);
    await response.body?.cancel();
    assert.deepEqual(api.requests[0].body, request);
  });
});

Deno.test("POST refuses ill-typed options and modes with 400 naming the field", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const base = { target: TARGET, preset: "balanced" };
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ ...base, mode: "remaster" }, /^mode must be one of/],
      [{ ...base, mode: 1 }, /^mode must be one of/],
      [{ ...base, mastering: "loud" }, /^mastering must be an object/],
      [{ ...base, mastering: [1] }, /^mastering must be an object/],
      [{ ...base, mastering: { loudness: true } }, /^mastering\.loudness /],
      [
        { ...base, mastering: { true_peak_dbtp: "-1" } },
        /^mastering\.true_peak_dbtp /,
      ],
      [{ ...base, mastering: { intensity: "high" } }, /^mastering\.intensity /],
      [{ ...base, mastering: { limiter: 2 } }, /^mastering\.limiter /],
      [{ ...base, previews: "yes" }, /^previews /],
      [{ target: TARGET, mode: "master" }, /only mode 'analyze' needs neither/],
      [
        { target: TARGET, mode: "preview" },
        /only mode 'analyze' needs neither/,
      ],
      [
        { target: TARGET, mode: "analyze", reference: TARGET, preset: "x" },
        /at most one of reference or preset/,
      ],
    ];
    for (const [body, message] of cases) {
      const response = await handler(apiRequest("POST", { body }), deps);
      const answer = await json(response);
      assert.equal(response.status, 400, JSON.stringify(body));
      assert.equal(answer.error.code, "invalid_request");
      assert.match(answer.error.message, message, JSON.stringify(body));
    }
    assert.equal(api.requests.length, 0, "nothing reached the API");
    assert.equal(deps.store.rows.size, 0);
  });
});

Deno.test("POST passes the API's refusal of an option's value through", async () => {
  await withFakeApi(async (api) => {
    // Given a well-typed option whose value the API refuses
    const deps = testDeps(api.url);
    const response = await handler(
      apiRequest("POST", {
        body: {
          target: TARGET,
          preset: "balanced",
          mastering: { intensity: 2 },
        },
      }),
      deps,
    );
    // Then the user sees the API's 400, which names the field
    const body = await json(response);
    assert.equal(response.status, 400);
    assert.deepEqual(body.error, {
      code: "invalid_request",
      message: "mastering.intensity must be between 0 and 1",
    });
    assert.equal(deps.store.rows.size, 0);
  });
});

Deno.test("POST over the owner's live-job limit is 429 too_many_jobs", async () => {
  await withFakeApi(async (api) => {
    // Given an API that allows one live job per owner, and ALICE has one
    const deps = testDeps(api.url);
    api.liveJobLimit = 1;
    const body = { target: TARGET, preset: "balanced" };
    const first = await handler(apiRequest("POST", { body }), deps);
    assert.equal(first.status, 201);
    await first.body?.cancel();

    // When she starts another
    const second = await handler(apiRequest("POST", { body }), deps);
    // Then it is refused with the API's 429 and code, and nothing is recorded
    await assertError(second, 429, "too_many_jobs");
    assert.equal(deps.store.rows.size, 1);

    // And BOB's limit is his own
    const bobs = await handler(
      apiRequest("POST", { body, token: jwtFor(BOB) }),
      deps,
    );
    assert.equal(bobs.status, 201);
    await bobs.body?.cancel();
  });
});

Deno.test("GET stores the job's warnings, analysis and resolved options", async () => {
  await withFakeApi(async (api) => {
    // Given ALICE's job, which ended while no webhook reached the function
    const deps = testDeps(api.url);
    const created = await json(
      await handler(
        apiRequest("POST", {
          body: { target: TARGET, preset: "balanced", previews: true },
        }),
        deps,
      ),
    );
    const warnings = [
      { code: "loudness_not_reached", message: "Reached -15.2 LUFS" },
    ];
    const results = {
      mp3: {
        url: "https://results.example/mastered.mp3",
        expires_at: "t",
        size: 10,
        lufs: -15.2,
        true_peak_dbtp: -1.01,
      },
      preview_target: { url: "https://results.example/pt.mp3", size: 5 },
      preview_result: { url: "https://results.example/pr.mp3", size: 5 },
    };
    const job = api.jobs.get(created.job_id)!;
    job.body = jobBody(created.job_id, "succeeded", {
      mastering: job.body.mastering,
      previews: job.body.previews,
      warnings,
      results,
    });

    // When she polls it
    const response = await handler(
      apiRequest("GET", { path: `/jobs/${created.job_id}` }),
      deps,
    );
    assert.equal(response.status, 200);
    await response.body?.cancel();

    // Then the row has everything the job body said
    const row = await deps.store.get(created.job_id);
    assert.equal(row?.status, "succeeded");
    assert.deepEqual(row?.warnings, warnings);
    assert.deepEqual(row?.analysis, ANALYSIS);
    assert.deepEqual(row?.results, results);
    assert.equal(row?.previews, true);
    assert.equal(
      (row?.mastering as { loudness_lufs: number }).loudness_lufs,
      -11,
      "the preset's own loudness, as resolved by the API",
    );
  });
});

Deno.test("GET from an API without the new fields keeps the recorded options and previews", async () => {
  await withFakeApi(async (api) => {
    // Given a job created with options, and an API that does not echo them
    const deps = testDeps(api.url);
    const asked = { loudness: "apple_music" };
    const created = await json(
      await handler(
        apiRequest("POST", {
          body: {
            target: TARGET,
            preset: "balanced",
            mastering: asked,
            previews: true,
          },
        }),
        deps,
      ),
    );
    api.jobs.get(created.job_id)!.body = legacyJobBody(
      created.job_id,
      "processing",
    );
    // When the owner polls
    const response = await handler(
      apiRequest("GET", { query: `?job_id=${created.job_id}` }),
      deps,
    );
    assert.equal(response.status, 200);
    await response.body?.cancel();
    // Then the row moves on and keeps what creation recorded
    const row = await deps.store.get(created.job_id);
    assert.equal(row?.status, "processing");
    assert.deepEqual(row?.mastering, asked);
    assert.equal(row?.mode, "master");
    assert.equal(row?.previews, true);
    assert.deepEqual(row?.warnings, []);
  });
});

Deno.test("API routes refuse a missing or malformed JWT with 401", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const expired = jwtFor(ALICE, { exp: Math.floor(Date.now() / 1000) - 60 });
    const notJson = `${jwtFor(ALICE).split(".")[0]}.bm90LWpzb24.sig`;
    const cases: [string, Request][] = [
      ["no header", apiRequest("POST", { token: null, body: { target: {} } })],
      ["not a JWT", apiRequest("POST", { token: "abc", body: {} })],
      ["two parts", apiRequest("POST", { token: "a.b", body: {} })],
      ["payload not JSON", apiRequest("POST", { token: notJson, body: {} })],
      ["bad base64", apiRequest("POST", { token: "a.%%%.c", body: {} })],
      [
        "anon key (no sub)",
        apiRequest("POST", {
          token: jwtFor(undefined, { role: "anon" }),
          body: {},
        }),
      ],
      [
        "sub not a uuid",
        apiRequest("POST", { token: jwtFor("admin"), body: {} }),
      ],
      ["expired", apiRequest("POST", { token: expired, body: {} })],
      [
        "GET without header",
        apiRequest("GET", { token: null, query: `?job_id=${ALICE}` }),
      ],
      [
        "Basic scheme",
        new Request(FUNCTION_URL, {
          method: "POST",
          headers: { authorization: `Basic ${btoa("a:b")}` },
        }),
      ],
    ];
    for (const [name, request] of cases) {
      const response = await handler(request, deps);
      assert.equal(response.status, 401, name);
      assert.equal(response.headers.get("www-authenticate"), "Bearer", name);
      await assertError(response, 401, "unauthorized");
    }
    assert.equal(api.requests.length, 0, "nothing may reach the API");
  });
});

Deno.test("POST refuses bad bodies with 400 before calling the API", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const bodies: [string, Request][] = [
      ["not JSON", apiRequest("POST", { rawBody: "{target:" })],
      ["empty", apiRequest("POST", { rawBody: "" })],
      ["array", apiRequest("POST", { body: [TARGET] })],
      ["no target", apiRequest("POST", { body: { preset: "balanced" } })],
      [
        "target not an object",
        apiRequest("POST", { body: { target: "song.wav", preset: "x" } }),
      ],
      ["neither", apiRequest("POST", { body: { target: TARGET } })],
      [
        "both",
        apiRequest("POST", {
          body: { target: TARGET, reference: TARGET, preset: "balanced" },
        }),
      ],
      [
        "preset not a string",
        apiRequest("POST", { body: { target: TARGET, preset: 3 } }),
      ],
      [
        "reference not an object",
        apiRequest("POST", { body: { target: TARGET, reference: "ref.wav" } }),
      ],
      [
        "outputs not a list",
        apiRequest("POST", {
          body: { target: TARGET, preset: "balanced", outputs: "mp3" },
        }),
      ],
      [
        "metadata not an object",
        apiRequest("POST", {
          body: { target: TARGET, preset: "balanced", metadata: [1] },
        }),
      ],
    ];
    for (const [name, request] of bodies) {
      const response = await handler(request, deps);
      assert.equal(response.status, 400, name);
      await assertError(response, 400, "invalid_request");
    }
    const huge = await handler(
      apiRequest("POST", {
        body: {
          target: TARGET,
          preset: "balanced",
          metadata: { x: "y".repeat(20_000) },
        },
      }),
      deps,
    );
    await assertError(huge, 413, "request_too_large");
    assert.equal(api.requests.length, 0);
    assert.equal(deps.store.rows.size, 0);
  });
});

Deno.test("POST passes the API's own errors through unchanged", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const unknown = await handler(
      apiRequest("POST", { body: { target: TARGET, preset: "nope" } }),
      deps,
    );
    await assertError(unknown, 400, "unknown_preset");

    const big = await handler(
      apiRequest("POST", {
        body: {
          target: { ...TARGET, size: 500 * 1024 * 1024 },
          preset: "balanced",
        },
      }),
      deps,
    );
    await assertError(big, 413, "file_too_large");

    api.override = {
      status: 415,
      body: { error: { code: "unsupported_format", message: "No .txt" } },
    };
    const unsupported = await handler(
      apiRequest("POST", { body: { target: TARGET, preset: "balanced" } }),
      deps,
    );
    await assertError(unsupported, 415, "unsupported_format");
    assert.equal(deps.store.rows.size, 0, "no row for a refused job");
  });
});

Deno.test("a refused API key is the operators' problem: 500 misconfigured", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    deps.api = new MasteringApi(api.url, "wrong-key");
    const response = await handler(
      apiRequest("POST", { body: { target: TARGET, preset: "balanced" } }),
      deps,
    );
    await assertError(response, 500, "misconfigured");
  });
});

Deno.test("odd API answers become 502 upstream_error", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    api.override = { status: 500, body: "<html>Bad gateway</html>" };
    await assertError(
      await handler(
        apiRequest("POST", { body: { target: TARGET, preset: "balanced" } }),
        deps,
      ),
      502,
      "upstream_error",
    );
    api.override = { status: 201, body: { job_id: "not-a-uuid" } };
    await assertError(
      await handler(
        apiRequest("POST", { body: { target: TARGET, preset: "balanced" } }),
        deps,
      ),
      502,
      "upstream_error",
    );
    api.override = { status: 200, body: { job_id: ALICE, status: "weird" } };
    await assertError(
      await handler(apiRequest("GET", { query: `?job_id=${ALICE}` }), deps),
      502,
      "upstream_error",
    );
    assert.equal(deps.store.rows.size, 0);
  });
});

Deno.test("an unreachable API is 502, a hung one 504", async () => {
  // A port that was just free: connection refused.
  const probe = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response(),
  );
  const port = probe.addr.port;
  await probe.shutdown();
  const deps = testDeps(`http://127.0.0.1:${port}`);
  await assertError(
    await handler(
      apiRequest("POST", { body: { target: TARGET, preset: "balanced" } }),
      deps,
    ),
    502,
    "upstream_unavailable",
  );

  // A fetch that only ever ends when the timeout aborts it.
  const hung = (_input: Request | URL | string, init?: RequestInit) =>
    new Promise<Response>((_resolve, reject) => {
      init?.signal?.addEventListener(
        "abort",
        () => reject(init.signal?.reason),
      );
    });
  deps.api = new MasteringApi("http://127.0.0.1:9", API_KEY, hung, 20);
  await assertError(
    await handler(apiRequest("GET", { query: `?job_id=${ALICE}` }), deps),
    504,
    "upstream_timeout",
  );
});

Deno.test("POST answers 500 when the job cannot be recorded", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const failing: JobStore = {
      upsertCreated: (_job: CreatedJob) =>
        Promise.reject(new Error("database down")),
      applyWebhook: () => Promise.reject(new Error("unused")),
      syncFromApi: () => Promise.reject(new Error("unused")),
      deleteOwned: () => Promise.reject(new Error("unused")),
      get: () => Promise.resolve(null),
    };
    const response = await handler(
      apiRequest("POST", { body: { target: TARGET, preset: "balanced" } }),
      { ...deps, store: failing },
    );
    await assertError(response, 500, "internal_error");
    assert.ok(
      deps.logs.some((entry) =>
        entry.level === "error" &&
        String(entry.fields.error).includes("database down")
      ),
    );
  });
});

Deno.test("GET returns the user's job with the owner forwarded", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const created = await json(
      await handler(
        apiRequest("POST", { body: { target: TARGET, preset: "balanced" } }),
        deps,
      ),
    );
    const response = await handler(
      apiRequest("GET", { query: `?job_id=${created.job_id}` }),
      deps,
    );
    const body = await json(response);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get(CORS_ORIGIN), "*");
    assert.equal(body.job_id, created.job_id);
    assert.equal(body.status, "awaiting_upload");
    assert.deepEqual(body, api.jobs.get(created.job_id)?.body);

    const sent = api.requests.at(-1)!;
    assert.equal(sent.method, "GET");
    assert.equal(sent.path, `/jobs/${created.job_id}`);
    assert.equal(sent.headers.get("x-owner-id"), ALICE);
    assert.equal(sent.headers.get("x-api-key"), API_KEY);
  });
});

Deno.test("GET of another user's job is the API's 404", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const created = await json(
      await handler(
        apiRequest("POST", { body: { target: TARGET, preset: "balanced" } }),
        deps,
      ),
    );
    const response = await handler(
      apiRequest("GET", {
        query: `?job_id=${created.job_id}`,
        token: jwtFor(BOB),
      }),
      deps,
    );
    await assertError(response, 404, "not_found");
    assert.equal(api.requests.at(-1)?.headers.get("x-owner-id"), BOB);

    const missing = await handler(
      apiRequest("GET", { query: `?job_id=${crypto.randomUUID()}` }),
      deps,
    );
    await assertError(missing, 404, "not_found");
  });
});

Deno.test("GET needs a job_id that is a UUID", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    await assertError(
      await handler(apiRequest("GET"), deps),
      400,
      "invalid_request",
    );
    await assertError(
      await handler(apiRequest("GET", { query: "?job_id=../presets" }), deps),
      400,
      "invalid_request",
    );
    assert.equal(api.requests.length, 0);
  });
});

Deno.test("GET brings the user's row up to date, never another's", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const created = await json(
      await handler(
        apiRequest("POST", { body: { target: TARGET, preset: "balanced" } }),
        deps,
      ),
    );
    const job = api.jobs.get(created.job_id)!;
    job.body = jobBody(created.job_id, "processing", {
      progress: { stage: "matching", percent: 55 },
    });
    await handler(
      apiRequest("GET", { query: `?job_id=${created.job_id}` }),
      deps,
    );
    let row = await deps.store.get(created.job_id);
    assert.equal(row?.status, "processing");
    assert.deepEqual(row?.progress, { stage: "matching", percent: 55 });

    // The API answers BOB with 404, so nothing of his reaches ALICE's row.
    job.body = jobBody(created.job_id, "expired");
    await handler(
      apiRequest("GET", {
        query: `?job_id=${created.job_id}`,
        token: jwtFor(BOB),
      }),
      deps,
    );
    row = await deps.store.get(created.job_id);
    assert.equal(row?.status, "processing");

    // expired sends no webhook: polling is how the row learns of it.
    await handler(
      apiRequest("GET", { query: `?job_id=${created.job_id}` }),
      deps,
    );
    row = await deps.store.get(created.job_id);
    assert.equal(row?.status, "expired");
    assert.equal(row?.owner_id, ALICE);
  });
});

Deno.test("GET still answers when the row cannot be synced", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const created = await json(
      await handler(
        apiRequest("POST", { body: { target: TARGET, preset: "balanced" } }),
        deps,
      ),
    );
    const store = deps.store;
    const flaky: JobStore = {
      upsertCreated: (job) => store.upsertCreated(job),
      applyWebhook: (id, job) => store.applyWebhook(id, job),
      syncFromApi: () => Promise.reject(new Error("timeout")),
      deleteOwned: (owner, id) => store.deleteOwned(owner, id),
      get: (id) => store.get(id),
    };
    const response = await handler(
      apiRequest("GET", { query: `?job_id=${created.job_id}` }),
      { ...deps, store: flaky },
    );
    assert.equal(response.status, 200);
    await response.body?.cancel();
    assert.ok(deps.logs.some((entry) => entry.level === "warn"));
  });
});

Deno.test("presets are listed at /presets and at ?presets", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    for (
      const request of [
        apiRequest("GET", { path: "/presets" }),
        apiRequest("GET", { query: "?presets" }),
        // Any caller the gateway let in: the anon key carries no user.
        apiRequest("GET", {
          path: "/presets",
          token: jwtFor(undefined, { role: "anon" }),
        }),
      ]
    ) {
      const response = await handler(request, deps);
      const body = await json(response);
      assert.equal(response.status, 200);
      assert.equal(body.presets[0].id, "balanced");
      assert.equal(response.headers.get(CORS_ORIGIN), "*");
    }
    assert.equal(api.requests[0].path, "/presets");
    assert.equal(api.requests[0].headers.get("x-api-key"), API_KEY);
    assert.equal(api.requests[0].headers.get("x-owner-id"), null);
  });
});

Deno.test("unknown routes are 404 and wrong methods 405", async () => {
  const deps = testDeps(null);
  await assertError(
    await handler(apiRequest("GET", { path: "/jobs/x/y" }), deps),
    404,
    "not_found",
  );
  const put = await handler(apiRequest("PUT", { body: {} }), deps);
  assert.equal(put.headers.get("allow"), "GET, POST, OPTIONS");
  await assertError(put, 405, "method_not_allowed");
  await assertError(
    await handler(apiRequest("POST", { path: "/presets", body: {} }), deps),
    405,
    "method_not_allowed",
  );
  await assertError(
    await handler(apiRequest("GET", { path: "/webhook" }), deps),
    405,
    "method_not_allowed",
  );
});

Deno.test("the full /functions/v1/<slug> path routes the same", async () => {
  await withFakeApi(async (api) => {
    const deps = testDeps(api.url);
    const response = await handler(
      new Request("http://127.0.0.1/functions/v1/ai-mastering/presets", {
        headers: { authorization: `Bearer ${jwtFor(ALICE)}` },
      }),
      deps,
    );
    assert.equal(response.status, 200);
    await response.body?.cancel();
  });
});

Deno.test("missing configuration is 500 misconfigured, never a crash", async () => {
  const logs: unknown[] = [];
  const deps = depsFromEnv(() => undefined, "all", {
    log: (...entry) => logs.push(entry),
  });
  assert.equal(deps.api, null);
  assert.equal(deps.store, null);
  assert.equal(deps.webhook, null);
  assert.equal(logs.length, 1, "problems are logged once, at start-up");

  await assertError(
    await handler(
      apiRequest("POST", { body: { target: TARGET, preset: "balanced" } }),
      deps,
    ),
    500,
    "misconfigured",
  );
  await assertError(
    await handler(apiRequest("GET", { query: `?job_id=${ALICE}` }), deps),
    500,
    "misconfigured",
  );
  await assertError(
    await handler(apiRequest("GET", { path: "/presets" }), deps),
    500,
    "misconfigured",
  );
  await assertError(
    await handler(
      new Request(`${FUNCTION_URL}/webhook`, { method: "POST", body: "{}" }),
      deps,
    ),
    500,
    "misconfigured",
  );
  // The JWT is still checked first: no config detail for anonymous callers.
  await assertError(
    await handler(apiRequest("POST", { token: null, body: {} }), deps),
    401,
    "unauthorized",
  );
});

Deno.test("configuration comes from the environment; values are never logged", () => {
  const env: Record<string, string> = {
    MASTERING_API_URL: "https://api.example/prod/",
    MASTERING_API_KEY: "key-123",
    MASTERING_WEBHOOK_SECRET: WEBHOOK_SECRET,
    SUPABASE_URL: "https://project.supabase.co",
    SUPABASE_SERVICE_ROLE_KEY: "service-role-jwt",
  };
  const complete = depsFromEnv((name) => env[name], "all", { log: () => {} });
  assert.ok(complete.api !== null && complete.store !== null);
  assert.ok(complete.webhook !== null);

  const logs: string[] = [];
  const broken = depsFromEnv(
    (name) =>
      ({
        ...env,
        MASTERING_API_URL: "ftp://nope",
        MASTERING_WEBHOOK_SECRET: "whsec_%%%",
      })[name],
    "all",
    {
      log: (_level, message, fields) =>
        logs.push(message + JSON.stringify(fields)),
    },
  );
  assert.equal(broken.api, null);
  assert.equal(broken.webhook, null);
  assert.ok(broken.store !== null);
  assert.match(logs.join(), /MASTERING_API_URL/);
  assert.match(logs.join(), /MASTERING_WEBHOOK_SECRET/);
  assert.doesNotMatch(logs.join(), /key-123|service-role-jwt|%%%/);

  // The webhook deployment needs no API settings and does not ask for them.
  const quiet: string[] = [];
  const webhookOnly = depsFromEnv(
    (name) => name.startsWith("MASTERING_API") ? undefined : env[name],
    "webhook",
    { log: (_level, message) => quiet.push(message) },
  );
  assert.equal(webhookOnly.api, null);
  assert.ok(webhookOnly.webhook !== null && webhookOnly.store !== null);
  assert.deepEqual(quiet, []);
});
