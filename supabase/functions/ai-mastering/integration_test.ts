/**
 * End to end against a real mastering API (the local stack, or a deployed
 * stage), as Spectrum's signed-in users would go through the function:
 *
 * - create a master job with options and previews -> browser-style presigned
 *   POST uploads -> the signed job.succeeded arriving at this handler on
 *   127.0.0.1 -> the row says succeeded with result URLs, options, previews
 *   and (when the API sends one) the analysis -> the mastered file downloads;
 * - list: a user sees her own jobs, newest first, page by page, never
 *   another's, whatever the query or body names as owner;
 * - cancel a job waiting for upload: the row turns cancelled at once, the
 *   signed job.cancelled arrives and is stored, and a replay of that very
 *   delivery is acknowledged as a duplicate; cancelling an ended job is a
 *   409 job_finished;
 * - expire a job waiting for upload (when MASTERING_INTEGRATION_EXPIRE_URL
 *   is set): the API expires it on the owner's GET and job.expired is stored;
 * - the per-user live-job limit: 429 too_many_jobs, then a cancel makes room;
 *   DELETE of live jobs (their job.cancelled find no row: 202);
 * - delete a finished job: another user cannot, the owner can (204), then
 *   the API answers 404, the row and the result files are gone.
 *
 * SKIPPED unless MASTERING_INTEGRATION_API_URL is set. Environment:
 *   MASTERING_INTEGRATION_API_URL         the HTTP API, e.g. http://127.0.0.1:3000
 *   MASTERING_INTEGRATION_API_KEY         its X-Api-Key
 *   MASTERING_INTEGRATION_WEBHOOK_SECRET  the whsec_... secret the stack signs with
 *   MASTERING_INTEGRATION_WEBHOOK_PORT    where this test listens (default 8788)
 *   MASTERING_INTEGRATION_TIMEOUT_S       how long to wait for a webhook (300)
 *   MASTERING_INTEGRATION_LIVE_JOB_LIMIT  the stack's live jobs per user (10)
 *   MASTERING_INTEGRATION_EXPIRE_URL      optional: `POST <url>/<job_id>` ends
 *                                         that job's upload window now (the
 *                                         local harness moves its deadline in
 *                                         the emulator's table: an hour
 *                                         passing, without the wait). Unset:
 *                                         the expiry step is ignored.
 * The stack must send its webhooks to
 *   WEBHOOK_URL=http://127.0.0.1:<port>/ai-mastering-webhook
 * with WEBHOOK_ALLOW_LOOPBACK=1 (the sender refuses loopback otherwise), and
 * hand out presigned URLs on 127.0.0.1: the test runs with
 * --allow-net=127.0.0.1 (use a wider --allow-net for a remote stage).
 */

import assert from "node:assert/strict";
import type { Deps } from "./deps.ts";
import { handler } from "./handler.ts";
import { MasteringApi } from "./mastering_api.ts";
import { MemoryJobStore } from "./store.ts";
import { jwtFor, type LogEntry } from "./testing.ts";
import { WebhookVerifier } from "./webhook.ts";

function env(name: string): string | undefined {
  try {
    const value = Deno.env.get(name)?.trim();
    return value === "" ? undefined : value;
  } catch {
    return undefined; // no --allow-env: behave as unset, i.e. skip
  }
}

function required(name: string): string {
  const value = env(name);
  if (value === undefined) {
    throw new Error(
      `${name} must be set when MASTERING_INTEGRATION_API_URL is`,
    );
  }
  return value;
}

const API_URL = env("MASTERING_INTEGRATION_API_URL");

/** Deterministic noise, so a failing run can be repeated bit for bit. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A 16-bit stereo 44.1 kHz WAV. `tones` are [frequency Hz, amplitude];
 * `noise` is white noise, through a one-pole low-pass when `dark` is set,
 * so target and reference differ in spectrum as well as in loudness.
 */
function wav(
  seconds: number,
  tones: [number, number][],
  noise: number,
  dark: boolean,
  seed: number,
): Uint8Array {
  const rate = 44_100;
  const frames = seconds * rate;
  const data = new DataView(new ArrayBuffer(44 + frames * 4));
  const text = (offset: number, value: string) => {
    for (let i = 0; i < value.length; i++) {
      data.setUint8(offset + i, value.charCodeAt(i));
    }
  };
  text(0, "RIFF");
  data.setUint32(4, 36 + frames * 4, true);
  text(8, "WAVE");
  text(12, "fmt ");
  data.setUint32(16, 16, true);
  data.setUint16(20, 1, true); // PCM
  data.setUint16(22, 2, true); // stereo
  data.setUint32(24, rate, true);
  data.setUint32(28, rate * 4, true);
  data.setUint16(32, 4, true);
  data.setUint16(34, 16, true);
  text(36, "data");
  data.setUint32(40, frames * 4, true);
  const random = mulberry32(seed);
  const lowPass = [0, 0];
  for (let frame = 0; frame < frames; frame++) {
    const time = frame / rate;
    // A slow swell keeps the level moving, like music rather than a test tone.
    const swell = 0.75 + 0.25 * Math.sin(2 * Math.PI * 0.5 * time);
    for (let channel = 0; channel < 2; channel++) {
      let sample = 0;
      for (const [frequency, amplitude] of tones) {
        sample += amplitude *
          Math.sin(2 * Math.PI * frequency * time + channel * 0.3);
      }
      let grain = (random() * 2 - 1) * noise;
      if (dark) {
        lowPass[channel] += 0.1 * (grain - lowPass[channel]);
        grain = lowPass[channel] * 3;
      }
      const value = Math.max(-1, Math.min(1, (sample + grain) * swell));
      data.setInt16(
        44 + frame * 4 + channel * 2,
        Math.round(value * 32767),
        true,
      );
    }
  }
  return new Uint8Array(data.buffer);
}

/** What Spectrum's browser code does: every field first, the file last. */
async function presignedUpload(
  upload: { url: string; fields: Record<string, string> },
  bytes: Uint8Array,
  filename: string,
): Promise<void> {
  const form = new FormData();
  for (const [name, value] of Object.entries(upload.fields)) {
    form.append(name, value);
  }
  form.append(
    "file",
    new Blob([bytes.slice().buffer], { type: "audio/wav" }),
    filename,
  );
  const response = await fetch(upload.url, { method: "POST", body: form });
  const text = await response.text();
  assert.ok(
    response.ok,
    `upload of ${filename} answered ${response.status}: ${text.slice(0, 500)}`,
  );
}

// deno-lint-ignore no-explicit-any
type Body = any;

/** What the function answered: status and JSON body (null when empty). */
interface Answer {
  status: number;
  body: Body;
}

/** One webhook delivery the stack made, and what the function answered. */
interface Delivery {
  headers: Headers;
  raw: string;
  type: string;
  jobId: string;
  data: Body;
  answer: number;
}

async function until<T>(
  what: string,
  timeoutS: number,
  probe: () => Promise<T | undefined> | T | undefined,
): Promise<T> {
  const deadline = Date.now() + timeoutS * 1000;
  for (;;) {
    const found = await probe();
    if (found !== undefined) return found;
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutS} s`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

const declared = (name: string, size: number) => ({
  filename: name,
  size,
  content_type: "audio/wav",
});

Deno.test({
  name: "integration: a user's jobs end to end against a real API",
  ignore: API_URL === undefined,
  async fn(t) {
    const apiUrl = API_URL!;
    const apiKey = required("MASTERING_INTEGRATION_API_KEY");
    const secret = required("MASTERING_INTEGRATION_WEBHOOK_SECRET");
    const port = Number(env("MASTERING_INTEGRATION_WEBHOOK_PORT") ?? "8788");
    const timeoutS = Number(env("MASTERING_INTEGRATION_TIMEOUT_S") ?? "300");
    const liveJobLimit = Number(
      env("MASTERING_INTEGRATION_LIVE_JOB_LIMIT") ?? "10",
    );
    const expireUrl = env("MASTERING_INTEGRATION_EXPIRE_URL");

    const health = await fetch(`${apiUrl.replace(/\/+$/, "")}/health`);
    assert.equal(
      health.status,
      200,
      `${apiUrl}/health: ${await health.text()}`,
    );

    const logs: LogEntry[] = [];
    const store = new MemoryJobStore();
    const common = {
      store,
      log: (level: LogEntry["level"], message: string, fields = {}) =>
        logs.push({ level, message, fields }),
      now: () => new Date(),
    };
    const apiDeps: Deps = {
      ...common,
      api: new MasteringApi(apiUrl, apiKey),
      webhook: null,
      routes: "all",
    };
    const webhookDeps: Deps = {
      ...common,
      api: null,
      webhook: new WebhookVerifier(secret),
      routes: "webhook",
    };
    // The `ai-mastering-webhook` deployment, keeping a copy of each delivery
    // (to replay one, and to know what the stack sent).
    const deliveries: Delivery[] = [];
    const server = Deno.serve(
      { hostname: "127.0.0.1", port, onListen: () => {} },
      async (req) => {
        // Read once and handed on as a new request: the signature covers
        // these exact bytes.
        const headers = new Headers(req.headers);
        const raw = await req.text();
        const response = await handler(
          new Request(req.url, { method: req.method, headers, body: raw }),
          webhookDeps,
        );
        let event: Body = null;
        try {
          event = JSON.parse(raw);
        } catch {
          event = null;
        }
        deliveries.push({
          headers,
          raw,
          type: String(event?.type),
          jobId: String(event?.data?.job_id),
          data: event?.data ?? null,
          answer: response.status,
        });
        return response;
      },
    );

    /** The function's API routes, as supabase.functions.invoke calls them. */
    const call = async (
      method: string,
      path: string,
      token: string,
      body?: unknown,
    ): Promise<Answer> => {
      const headers: Record<string, string> = {
        authorization: `Bearer ${token}`,
      };
      if (body !== undefined) headers["content-type"] = "application/json";
      const response = await handler(
        new Request(`http://127.0.0.1/ai-mastering${path}`, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
        }),
        apiDeps,
      );
      const text = await response.text();
      return {
        status: response.status,
        body: text === "" ? null : JSON.parse(text),
      };
    };
    const expectError = (
      answer: Answer,
      status: number,
      code: string,
      message: RegExp,
    ) => {
      assert.equal(answer.status, status, JSON.stringify(answer.body));
      assert.equal(answer.body.error.code, code);
      assert.match(answer.body.error.message, message);
    };
    /** A job waiting for its upload, with a preset (nothing is uploaded). */
    const waitingJob = async (token: string, name: string) => {
      const created = await call("POST", "/jobs", token, {
        target: declared(`${name}.wav`, 44_144),
        preset: "balanced",
        metadata: { name },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      return created.body.job_id as string;
    };
    const listed = async (token: string, query = ""): Promise<Body> => {
      const page = await call("GET", `/jobs${query}`, token);
      assert.equal(page.status, 200, JSON.stringify(page.body));
      return page.body;
    };
    const ids = (page: Body): string[] =>
      page.jobs.map((job: { job_id: string }) => job.job_id);
    /** The row once a webhook (never a poll) brought it to `status`. */
    const storedByWebhook = (jobId: string, status: string) =>
      until(
        `a job.${status} webhook stored for ${jobId}`,
        timeoutS,
        async () => {
          const row = await store.get(jobId);
          return row !== null && row.last_webhook_id !== null &&
              row.status === status
            ? row
            : undefined;
        },
      );
    const deliveryOf = (jobId: string, type: string) =>
      until(
        `a ${type} delivery for ${jobId}`,
        timeoutS,
        () => deliveries.find((d) => d.jobId === jobId && d.type === type),
      );

    const alice = crypto.randomUUID();
    const bob = crypto.randomUUID();
    const carol = crypto.randomUUID();
    const [aliceToken, bobToken, carolToken] = [alice, bob, carol].map((id) =>
      jwtFor(id)
    );

    try {
      // Started first: it is mastered while the other steps run.
      let masterJob = "";
      await t.step(
        "create a master job with previews and upload it",
        async () => {
          const target = wav(
            10,
            [[110, 0.08], [440, 0.04], [1760, 0.01]],
            0.02,
            true,
            1,
          );
          const reference = wav(10, [[220, 0.2], [660, 0.1]], 0.25, false, 2);
          // Given alice signed in, asking for options and previews
          const created = await call("POST", "", aliceToken, {
            target: declared("target.wav", target.byteLength),
            reference: declared("reference.wav", reference.byteLength),
            outputs: ["wav16", "mp3"],
            metadata: { test: "integration" },
            mastering: { loudness: "spotify", true_peak_dbtp: -1.5 },
            previews: true,
            mode: "master",
          });
          // Then the job is hers, and she is told what it will render
          assert.equal(created.status, 201, JSON.stringify(created.body));
          const job = created.body;
          assert.equal(job.status, "awaiting_upload");
          assert.equal(job.mode, "master");
          assert.equal(job.previews, true);
          const row = await store.get(job.job_id);
          assert.equal(row?.owner_id, alice);
          assert.equal(row?.previews, true);
          // When her browser uploads both files with the presigned POSTs
          await presignedUpload(job.uploads.target, target, "target.wav");
          await presignedUpload(
            job.uploads.reference,
            reference,
            "reference.wav",
          );
          masterJob = job.job_id;
        },
      );

      let waiting = "";
      let toExpire = "";
      await t.step("a user lists her own jobs, never another's", async () => {
        // Given two more jobs of alice's and one of bob's
        waiting = await waitingJob(aliceToken, "waiting");
        toExpire = await waitingJob(aliceToken, "to-expire");
        const bobsJob = await waitingJob(bobToken, "bobs");

        // When alice lists her jobs, naming bob as owner in the query
        const all = await listed(aliceToken, `?owner_id=${bob}&limit=100`);
        // Then she gets exactly hers, newest first
        assert.deepEqual(
          new Set(ids(all)),
          new Set([masterJob, waiting, toExpire]),
        );
        const created = all.jobs.map((job: Body) => job.created_at);
        assert.deepEqual(created, [...created].sort().reverse());
        assert.equal(all.next_cursor, null);
        const summary = all.jobs.find((job: Body) => job.job_id === waiting);
        assert.deepEqual(summary.metadata, { name: "waiting" });
        assert.equal(summary.status, "awaiting_upload");

        // And page by page, through next_cursor, she gets the same list
        const paged: string[] = [];
        let cursor: string | null = null;
        do {
          const query: string = cursor === null
            ? "?limit=1"
            : `?limit=1&cursor=${encodeURIComponent(cursor)}`;
          const page: Body = await listed(aliceToken, query);
          assert.ok(page.jobs.length <= 1);
          paged.push(...ids(page));
          cursor = page.next_cursor;
        } while (cursor !== null && paged.length < 10);
        assert.deepEqual(paged, ids(all));

        // And bob sees only his
        assert.deepEqual(ids(await listed(bobToken)), [bobsJob]);

        // When alice names bob as the owner in a create body
        const impostor = await call("POST", "", aliceToken, {
          target: declared("x.wav", 44_144),
          preset: "balanced",
          owner_id: bob,
        });
        // Then it is refused, and bob still has only his own job
        expectError(impostor, 400, "invalid_request", /^owner_id cannot/);
        assert.deepEqual(ids(await listed(bobToken)), [bobsJob]);
        // And a bad page size is the API's own 400, naming the field
        expectError(
          await call("GET", "/jobs?limit=0", aliceToken),
          400,
          "invalid_request",
          /limit/,
        );
      });

      await t.step("cancel a job waiting for upload", async () => {
        // When bob tries to cancel alice's job
        const stranger = await call(
          "POST",
          `/jobs/${waiting}/cancel`,
          bobToken,
        );
        // Then it does not exist for him, and nothing changed
        expectError(stranger, 404, "not_found", /./);
        assert.equal((await store.get(waiting))?.status, "awaiting_upload");

        // When alice cancels it
        const cancelled = await call(
          "POST",
          `/jobs/${waiting}/cancel`,
          aliceToken,
        );
        // Then the answer is the job, cancelled, and the row says so at once
        assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
        assert.equal(cancelled.body.status, "cancelled");
        assert.equal((await store.get(waiting))?.status, "cancelled");
        assert.deepEqual(
          ids(await listed(aliceToken, "?status=cancelled")),
          [waiting],
        );

        // And the stack's signed job.cancelled arrives and is stored
        const row = await storedByWebhook(waiting, "cancelled");
        const delivery = await deliveryOf(waiting, "job.cancelled");
        assert.equal(delivery.answer, 204, "applied");
        assert.equal(row.last_webhook_id, delivery.headers.get("webhook-id"));
        assert.equal(delivery.data.status, "cancelled");

        // When that very delivery comes again (a retry whose answer was lost)
        const replay = await handler(
          new Request(`http://127.0.0.1:${port}/ai-mastering-webhook`, {
            method: "POST",
            headers: delivery.headers,
            body: delivery.raw,
          }),
          webhookDeps,
        );
        // Then it is acknowledged as a duplicate and not applied again
        assert.equal(replay.status, 200);
        assert.deepEqual(await replay.json(), { status: "duplicate" });
        assert.deepEqual(await store.get(waiting), row);

        // When alice cancels it again
        const again = await call(
          "POST",
          `/jobs/${waiting}/cancel`,
          aliceToken,
        );
        // Then she is told it had already ended
        expectError(again, 409, "job_finished", /ended|finished/i);
      });

      await t.step({
        name:
          "a job whose uploads never came expires, and job.expired is stored",
        ignore: expireUrl === undefined,
        fn: async () => {
          // Given the job's upload window is over (the harness moves its
          // deadline: an hour passing, without the wait)
          const over = await fetch(`${expireUrl}/${toExpire}`, {
            method: "POST",
          });
          assert.equal(over.status, 204, await over.text());

          // When alice looks at it
          const polled = await call("GET", `/jobs/${toExpire}`, aliceToken);
          // Then it has expired, with a code that says why, in the row too
          assert.equal(polled.status, 200, JSON.stringify(polled.body));
          assert.equal(polled.body.status, "expired");
          assert.equal(polled.body.error.code, "upload_expired");
          assert.equal((await store.get(toExpire))?.status, "expired");

          // And the stack's signed job.expired arrives and is stored
          const row = await storedByWebhook(toExpire, "expired");
          const delivery = await deliveryOf(toExpire, "job.expired");
          assert.equal(delivery.answer, 204);
          assert.equal(
            row.last_webhook_id,
            delivery.headers.get("webhook-id"),
          );
          assert.deepEqual(row.error, polled.body.error);
        },
      });

      await t.step(
        "the live-job limit reaches the user as 429 too_many_jobs",
        async () => {
          // Given carol with as many jobs waiting as the stack allows
          const jobs: string[] = [];
          for (let n = 0; n < liveJobLimit; n++) {
            jobs.push(await waitingJob(carolToken, `carol-${n}`));
          }
          // When she starts one more
          const refused = await call("POST", "", carolToken, {
            target: declared("one-too-many.wav", 44_144),
            preset: "balanced",
          });
          // Then she is told why and what to do, and no row is made
          expectError(refused, 429, "too_many_jobs", /cancel one/);
          assert.match(
            refused.body.error.message,
            new RegExp(`${liveJobLimit}`),
          );
          const carols = () =>
            [...store.rows.values()].filter((row) => row.owner_id === carol);
          assert.equal(carols().length, liveJobLimit);

          // When she cancels one, there is room again
          const cancelled = await call(
            "POST",
            `/jobs/${jobs[0]}/cancel`,
            carolToken,
          );
          assert.equal(cancelled.status, 200);
          jobs.push(await waitingJob(carolToken, "carol-after-cancel"));

          // When she deletes them all, live ones included
          for (const jobId of jobs) {
            const deleted = await call("DELETE", `/jobs/${jobId}`, carolToken);
            assert.equal(deleted.status, 204, JSON.stringify(deleted.body));
          }
          // Then her rows and her jobs are gone
          assert.equal(carols().length, 0);
          assert.deepEqual(ids(await listed(carolToken)), []);
          // And each live job's job.cancelled still reached the function,
          // which applied it or, its row gone, acknowledged it (202)
          for (const jobId of jobs) {
            const delivery = await deliveryOf(jobId, "job.cancelled");
            assert.ok(
              [202, 204].includes(delivery.answer),
              `${delivery.answer}`,
            );
          }
        },
      );

      let resultUrl = "";
      await t.step(
        "the master job's job.succeeded is stored in full",
        async () => {
          const row = await storedByWebhook(masterJob, "succeeded").catch(
            async (error) => {
              // Say how it ended instead, if it did not succeed
              const ended = await store.get(masterJob);
              throw new Error(
                `${error.message}; row: ${JSON.stringify(ended)}`,
              );
            },
          );
          const delivery = await deliveryOf(masterJob, "job.succeeded");
          assert.equal(delivery.answer, 204);
          assert.equal(row.owner_id, alice);
          assert.deepEqual(row.metadata, { test: "integration" });
          assert.equal(row.mode, "master");
          assert.equal(row.previews, true);
          const results = row.results as Record<
            string,
            { url: string; lufs: number; true_peak_dbtp: number }
          >;
          const formats = Object.keys(results).filter((name) =>
            !name.startsWith("preview_")
          );
          assert.deepEqual(formats.sort(), ["mp3", "wav16"]);
          for (const format of formats) {
            const result = results[format];
            assert.match(result.url, /^https?:\/\//);
            // Each file carries its own measurement: at Spotify's loudness,
            // under the ceiling asked for.
            assert.ok(
              Math.abs(result.lufs + 14) <= 0.5,
              JSON.stringify(result),
            );
            assert.ok(result.true_peak_dbtp <= -1.5, JSON.stringify(result));
          }
          // Previews: the row has exactly what the job body listed (both or,
          // from a stack that does not render them yet, neither)
          const previews = Object.keys(results).filter((name) =>
            name.startsWith("preview_")
          ).sort();
          assert.deepEqual(
            previews,
            Object.keys(delivery.data.results).filter((name) =>
              name.startsWith("preview_")
            ).sort(),
          );
          assert.ok(
            previews.length === 0 ||
              previews.join() === "preview_result,preview_target",
            previews.join(),
          );
          for (const name of previews) {
            assert.match(results[name].url, /^https?:\/\//);
          }
          assert.equal(typeof row.metrics?.result_lufs, "number");
          // The options the API resolved are stored on the row.
          assert.deepEqual(row.mastering, {
            loudness: "spotify",
            loudness_lufs: -14,
            true_peak_dbtp: -1.5,
            intensity: 1,
            limiter: "true_peak",
          });
          assert.deepEqual(row.warnings, []);
          // The analysis: what the webhook carried, when the stack sends one
          assert.deepEqual(row.analysis, delivery.data.analysis ?? null);
          if (row.analysis !== null) {
            const analysis = row.analysis as Body;
            const bands = analysis.band_centres_hz.length;
            assert.ok(bands >= 16, `${bands} bands`);
            for (const track of ["target", "reference", "result"]) {
              assert.equal(typeof analysis[track].lufs, "number", track);
              assert.equal(analysis[track].bands_db.length, bands, track);
            }
            assert.ok(Math.abs(analysis.result.lufs + 14) <= 0.5);
          }
          console.log(
            `master job: analysis ${
              row.analysis === null ? "not sent by this stack" : "stored"
            }; previews ${previews.length === 0 ? "not rendered" : "stored"}`,
          );

          // The owner's GET agrees, and another user cannot see the job.
          const fresh = await call("GET", `?job_id=${masterJob}`, aliceToken);
          assert.equal(fresh.status, 200, JSON.stringify(fresh.body));
          assert.equal(fresh.body.status, "succeeded");
          assert.equal(fresh.body.previews, true);
          assert.deepEqual(fresh.body.analysis, row.analysis);
          expectError(
            await call("GET", `?job_id=${masterJob}`, bobToken),
            404,
            "not_found",
            /./,
          );

          // The browser downloads straight from the presigned URL.
          resultUrl = fresh.body.results.wav16.url;
          const download = await fetch(resultUrl);
          const bytes = new Uint8Array(await download.arrayBuffer());
          assert.equal(download.status, 200);
          assert.equal(new TextDecoder().decode(bytes.slice(0, 4)), "RIFF");
          assert.equal(bytes.byteLength, fresh.body.results.wav16.size);
        },
      );

      await t.step(
        "cancelling a finished job is a clear 409 job_finished",
        async () => {
          const answer = await call(
            "POST",
            `/jobs/${masterJob}/cancel`,
            aliceToken,
          );
          expectError(answer, 409, "job_finished", /ended|finished/i);
          assert.equal((await store.get(masterJob))?.status, "succeeded");
        },
      );

      await t.step(
        "the owner, and only she, deletes a finished job",
        async () => {
          // When bob tries to delete alice's job
          expectError(
            await call("DELETE", `/jobs/${masterJob}`, bobToken),
            404,
            "not_found",
            /./,
          );
          // Then it and its row are still there
          assert.equal((await store.get(masterJob))?.status, "succeeded");
          assert.equal(
            (await call("GET", `/jobs/${masterJob}`, aliceToken)).status,
            200,
          );

          // When alice deletes it
          const deleted = await call(
            "DELETE",
            `/jobs/${masterJob}`,
            aliceToken,
          );
          // Then it is gone: the answer, the row, the API and the files
          assert.equal(deleted.status, 204, JSON.stringify(deleted.body));
          assert.equal(deleted.body, null);
          assert.equal(await store.get(masterJob), null);
          expectError(
            await call("GET", `/jobs/${masterJob}`, aliceToken),
            404,
            "not_found",
            /./,
          );
          // S3 answers a missing key with 403 to a caller that may not list
          // the bucket (real S3 and the emulator alike), 404 otherwise.
          const download = await fetch(resultUrl);
          await download.body?.cancel();
          assert.ok(
            [403, 404].includes(download.status),
            `the result file is still served: ${download.status}`,
          );
          assert.ok(!ids(await listed(aliceToken)).includes(masterJob));
          // And deleting it again is a 404: nothing is left
          expectError(
            await call("DELETE", `/jobs/${masterJob}`, aliceToken),
            404,
            "not_found",
            /./,
          );
        },
      );

      // Nothing went wrong on the way that only the log would show.
      assert.deepEqual(
        logs.filter((entry) => entry.level === "error"),
        [],
      );
      assert.ok(
        deliveries.every((d) => [200, 202, 204].includes(d.answer)),
        JSON.stringify(deliveries.map((d) => [d.type, d.answer])),
      );
    } finally {
      await server.shutdown();
    }
  },
});
