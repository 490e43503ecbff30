/**
 * End to end against a real mastering API (the local stack, or a deployed
 * stage): create -> browser-style presigned POST uploads -> the signed webhook
 * arriving at this handler on 127.0.0.1 -> the row says succeeded with result
 * URLs -> the mastered file downloads.
 *
 * SKIPPED unless MASTERING_INTEGRATION_API_URL is set. Environment:
 *   MASTERING_INTEGRATION_API_URL         the HTTP API, e.g. http://127.0.0.1:3000
 *   MASTERING_INTEGRATION_API_KEY         its X-Api-Key
 *   MASTERING_INTEGRATION_WEBHOOK_SECRET  the whsec_... secret the stack signs with
 *   MASTERING_INTEGRATION_WEBHOOK_PORT    where this test listens (default 8788)
 *   MASTERING_INTEGRATION_TIMEOUT_S       how long to wait for the webhook (300)
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
import { type JobRow, MemoryJobStore } from "./store.ts";
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

async function waitForWebhook(
  store: MemoryJobStore,
  jobId: string,
  timeoutS: number,
): Promise<JobRow> {
  const deadline = Date.now() + timeoutS * 1000;
  for (;;) {
    const row = await store.get(jobId);
    // last_webhook_id is set by the webhook path only: the test never polls
    // through the handler while waiting, so this is the webhook's doing.
    if (row !== null && row.last_webhook_id !== null) return row;
    if (Date.now() > deadline) {
      throw new Error(
        `no webhook for job ${jobId} within ${timeoutS} s (row: ${
          JSON.stringify(row)
        })`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

Deno.test({
  name: "integration: create, upload, webhook, download against a real API",
  ignore: API_URL === undefined,
  async fn() {
    const apiUrl = API_URL!;
    const apiKey = required("MASTERING_INTEGRATION_API_KEY");
    const secret = required("MASTERING_INTEGRATION_WEBHOOK_SECRET");
    const port = Number(env("MASTERING_INTEGRATION_WEBHOOK_PORT") ?? "8788");
    const timeoutS = Number(env("MASTERING_INTEGRATION_TIMEOUT_S") ?? "300");

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
    const server = Deno.serve(
      { hostname: "127.0.0.1", port, onListen: () => {} },
      (req) => handler(req, webhookDeps),
    );
    try {
      const userId = crypto.randomUUID();
      const token = jwtFor(userId);
      const target = wav(
        10,
        [[110, 0.08], [440, 0.04], [1760, 0.01]],
        0.02,
        true,
        1,
      );
      const reference = wav(10, [[220, 0.2], [660, 0.1]], 0.25, false, 2);

      const created = await handler(
        new Request("http://127.0.0.1/ai-mastering", {
          method: "POST",
          headers: {
            authorization: `Bearer ${token}`,
            "content-type": "application/json",
          },
          body: JSON.stringify({
            target: {
              filename: "target.wav",
              size: target.byteLength,
              content_type: "audio/wav",
            },
            reference: {
              filename: "reference.wav",
              size: reference.byteLength,
              content_type: "audio/wav",
            },
            outputs: ["wav16", "mp3"],
            metadata: { test: "integration" },
            mastering: { loudness: "spotify", true_peak_dbtp: -1.5 },
          }),
        }),
        apiDeps,
      );
      const job = await created.json();
      assert.equal(created.status, 201, JSON.stringify(job));
      assert.equal(job.status, "awaiting_upload");
      assert.equal((await store.get(job.job_id))?.owner_id, userId);

      await presignedUpload(job.uploads.target, target, "target.wav");
      await presignedUpload(job.uploads.reference, reference, "reference.wav");

      const row = await waitForWebhook(store, job.job_id, timeoutS);
      assert.equal(
        row.status,
        "succeeded",
        `job ended ${row.status}: ${JSON.stringify(row.error)}`,
      );
      assert.equal(row.owner_id, userId);
      assert.deepEqual(row.metadata, { test: "integration" });
      assert.ok(
        logs.some((entry) => entry.message === "webhook applied"),
        "the webhook went through the handler",
      );
      const results = row.results as Record<
        string,
        { url: string; lufs: number; true_peak_dbtp: number }
      >;
      assert.deepEqual(Object.keys(results).sort(), ["mp3", "wav16"]);
      for (const result of Object.values(results)) {
        assert.match(result.url, /^https?:\/\//);
        // Each file carries its own measurement: at Spotify's loudness, under
        // the ceiling asked for.
        assert.ok(Math.abs(result.lufs + 14) <= 0.5, JSON.stringify(result));
        assert.ok(result.true_peak_dbtp <= -1.5, JSON.stringify(result));
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

      // The owner's GET agrees, and another user cannot see the job.
      const polled = await handler(
        new Request(`http://127.0.0.1/ai-mastering?job_id=${job.job_id}`, {
          headers: { authorization: `Bearer ${token}` },
        }),
        apiDeps,
      );
      const fresh = await polled.json();
      assert.equal(polled.status, 200, JSON.stringify(fresh));
      assert.equal(fresh.status, "succeeded");
      const stranger = await handler(
        new Request(`http://127.0.0.1/ai-mastering?job_id=${job.job_id}`, {
          headers: { authorization: `Bearer ${jwtFor(crypto.randomUUID())}` },
        }),
        apiDeps,
      );
      assert.equal(stranger.status, 404);
      await stranger.body?.cancel();

      // The browser downloads straight from the presigned URL.
      const download = await fetch(fresh.results.wav16.url);
      const bytes = new Uint8Array(await download.arrayBuffer());
      assert.equal(download.status, 200);
      assert.equal(new TextDecoder().decode(bytes.slice(0, 4)), "RIFF");
      assert.equal(bytes.byteLength, fresh.results.wav16.size);
    } finally {
      await server.shutdown();
    }
  },
});
