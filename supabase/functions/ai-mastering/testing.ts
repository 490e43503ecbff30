/**
 * Test helpers: a fake mastering API on 127.0.0.1 (a real HTTP server, so URL
 * building, headers and bodies cross a real socket), unsigned JWTs shaped like
 * Supabase's, signed webhooks, and Deps wired to an in-memory store.
 * Not part of the deployed function (nothing in index.ts imports it).
 */

import { Webhook } from "npm:standardwebhooks@1.1.1";
import type { Deps, LogLevel, RouteSet } from "./deps.ts";
import type { JsonObject } from "./jobs.ts";
import { type FetchFn, MasteringApi } from "./mastering_api.ts";
import { MemoryJobStore } from "./store.ts";
import { WebhookVerifier } from "./webhook.ts";

export const API_KEY = "test-api-key";
/** 32 random-looking bytes, base64, in the `whsec_` form the sender uses. */
export const WEBHOOK_SECRET = "whsec_" +
  btoa("spectrum-test-webhook-secret-32b");
export const OTHER_SECRET = "whsec_" + btoa("another-secret-of-thirty-two-by!");

export const ALICE = "5f0c6a52-7a8e-4d0f-9a55-3f7c2d9e1a01";
export const BOB = "a7d4e2b1-0c3f-4e8a-b6d5-91f2c3e4d5b6";

function base64Url(text: string): string {
  const bytes = new TextEncoder().encode(text);
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(
    /\//g,
    "_",
  ).replace(/=+$/, "");
}

/**
 * A JWT with Supabase's claims and a dummy signature: the gateway verified
 * the real one before the function runs, so the function only decodes it.
 */
export function jwtFor(
  sub: string | undefined,
  extra: Record<string, unknown> = {},
): string {
  const header = base64Url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims: Record<string, unknown> = {
    aud: "authenticated",
    role: "authenticated",
    exp: Math.floor(Date.now() / 1000) + 3600,
    ...extra,
  };
  if (sub !== undefined) claims.sub = sub;
  return `${header}.${base64Url(JSON.stringify(claims))}.c2lnbmF0dXJl`;
}

export interface LogEntry {
  level: LogLevel;
  message: string;
  fields: Record<string, unknown>;
}

export interface TestDeps extends Deps {
  store: MemoryJobStore;
  logs: LogEntry[];
}

export function testDeps(
  apiUrl: string | null,
  options: { routes?: RouteSet; fetch?: FetchFn; secret?: string } = {},
): TestDeps {
  const logs: LogEntry[] = [];
  return {
    api: apiUrl === null
      ? null
      : new MasteringApi(apiUrl, API_KEY, options.fetch ?? fetch),
    store: new MemoryJobStore(),
    webhook: new WebhookVerifier(options.secret ?? WEBHOOK_SECRET),
    routes: options.routes ?? "all",
    log: (level, message, fields = {}) => logs.push({ level, message, fields }),
    now: () => new Date(),
    logs,
  };
}

export const FUNCTION_URL = "http://127.0.0.1/ai-mastering";

export function apiRequest(
  method: string,
  options: {
    path?: string;
    query?: string;
    token?: string | null;
    body?: unknown;
    rawBody?: string;
  } = {},
): Request {
  const headers = new Headers({ "x-client-info": "supabase-js/2" });
  const token = options.token === undefined ? jwtFor(ALICE) : options.token;
  if (token !== null) headers.set("authorization", `Bearer ${token}`);
  let body: string | undefined = options.rawBody;
  if (options.body !== undefined) body = JSON.stringify(options.body);
  if (body !== undefined) headers.set("content-type", "application/json");
  return new Request(
    `${FUNCTION_URL}${options.path ?? ""}${options.query ?? ""}`,
    { method, headers, body },
  );
}

export const TARGET = {
  filename: "song.wav",
  size: 1_234_567,
  content_type: "audio/wav",
};

/** The resolved options of a job that asked for none (reference job). */
export const DEFAULT_MASTERING: JsonObject = {
  loudness: "reference",
  loudness_lufs: null,
  true_peak_dbtp: -1,
  intensity: 1,
  limiter: "true_peak",
};

export const ANALYSIS: JsonObject = {
  target: {
    lufs: -21.5,
    loudness_range_lu: 6.1,
    true_peak_dbtp: -4.2,
    sample_peak_dbfs: -4.4,
    bands_db: [-30, -28, -27, -31],
  },
  result: {
    lufs: -14,
    loudness_range_lu: 5.2,
    true_peak_dbtp: -1,
    sample_peak_dbfs: -1.1,
    bands_db: [-24, -22, -21, -25],
  },
  band_centres_hz: [63, 250, 1000, 4000],
};

/**
 * A job body as `GET /jobs/{id}` and the webhook carry it, in the shape of
 * DESIGN.md's current contract (options echo, warnings, analysis, mode,
 * previews).
 */
export function jobBody(
  jobId: string,
  status: string,
  extra: Record<string, unknown> = {},
): JsonObject {
  const ended = status === "succeeded" || status === "failed";
  return {
    job_id: jobId,
    status,
    progress: {
      stage: status === "succeeded" ? "done" : status,
      percent: ended ? 100 : 0,
    },
    created_at: "2026-11-23T09:00:00.000Z",
    updated_at: "2026-11-23T09:01:00.000Z",
    error: status === "failed"
      ? { code: "invalid_audio", message: "The target is not audio" }
      : null,
    results: status === "succeeded"
      ? {
        wav16: {
          url: `https://results.example/results/${jobId}/mastered.wav?sig=1`,
          expires_at: "2026-11-23T10:00:00.000Z",
          size: 4242,
          lufs: -14,
          true_peak_dbtp: -1.02,
        },
      }
      : {},
    metrics: status === "succeeded"
      ? { duration_s: 8, result_lufs: -9.1, processing_s: 3.2 }
      : null,
    metadata: {},
    mode: "master",
    previews: false,
    mastering: DEFAULT_MASTERING,
    warnings: [],
    analysis: status === "succeeded" ? ANALYSIS : null,
    ...extra,
  } as JsonObject;
}

/** A job body as an API from before options and modes sends it. */
export function legacyJobBody(jobId: string, status: string): JsonObject {
  const {
    mode: _mode,
    previews: _previews,
    mastering: _mastering,
    warnings: _warnings,
    analysis: _analysis,
    ...legacy
  } = jobBody(jobId, status);
  return legacy;
}

/** Signed like src/mastering/notify/webhooks.py signs (Standard Webhooks). */
export function webhookRequest(
  payload: string,
  options: {
    id?: string;
    at?: Date;
    secret?: string;
    url?: string;
    signature?: string;
  } = {},
): Request {
  const id = options.id ?? `msg_${crypto.randomUUID()}`;
  const at = options.at ?? new Date();
  const signature = options.signature ??
    new Webhook(options.secret ?? WEBHOOK_SECRET).sign(id, at, payload);
  return new Request(
    options.url ?? "http://127.0.0.1/ai-mastering-webhook",
    {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "user-agent": "spectrum-mastering-webhooks/1",
        "webhook-id": id,
        "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
        "webhook-signature": signature,
      },
      body: payload,
    },
  );
}

export function event(type: string, data: JsonObject): string {
  // Compact, like the sender's json.dumps(..., separators=(",", ":")).
  return JSON.stringify({ type, data });
}

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Headers;
  body: unknown;
}

interface FakeJob {
  owner: string;
  body: JsonObject;
  /** Creation order: the list is newest first, and its cursor is this. */
  seq: number;
}

/** Platform ids the fake resolves (a few of DESIGN.md's). */
const PLATFORM_LUFS: Record<string, number> = {
  spotify: -14,
  apple_music: -16,
  ebu_r128: -23,
};
// The contract's statuses, written out rather than imported so the fake does
// not share a mistake with the code under test.
const STATUSES = [
  "awaiting_upload",
  "queued",
  "processing",
  "succeeded",
  "failed",
  "expired",
  "cancelled",
];
const ENDED = new Set(["succeeded", "failed", "expired", "cancelled"]);

/** The fake's one preset's own loudness. */
const BALANCED_LUFS = -11;

/**
 * The HTTP API of DESIGN.md, faked: API key check, owner scoping (another
 * owner's job is a 404, as in the real one), create with options and modes,
 * list, cancel and delete, the live-job limit, a few of the real error
 * answers. `override` answers the next request with a canned response.
 */
export class FakeMasteringApi {
  readonly requests: RecordedRequest[] = [];
  readonly jobs = new Map<string, FakeJob>();
  override: { status: number; body: unknown } | null = null;
  /** Live (not ended) jobs an owner may have; more is 429 too_many_jobs. */
  liveJobLimit = Number.POSITIVE_INFINITY;
  #seq = 0;
  readonly #server: Deno.HttpServer<Deno.NetAddr>;

  constructor() {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => this.#handle(req),
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  async close(): Promise<void> {
    await this.#server.shutdown();
  }

  async #handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const text = await req.text();
    const body = text === "" ? null : JSON.parse(text);
    this.requests.push({
      method: req.method,
      path: url.pathname,
      headers: req.headers,
      body,
    });
    if (this.override !== null) {
      const { status, body: answer } = this.override;
      this.override = null;
      return Response.json(answer, { status });
    }
    if (req.headers.get("x-api-key") !== API_KEY) {
      return error(401, "unauthorized", "Missing or wrong API key");
    }
    const owner = req.headers.get("x-owner-id") ?? "";
    if (req.method === "POST" && url.pathname === "/jobs") {
      return this.#create(owner, body as JsonObject);
    }
    if (req.method === "GET" && url.pathname === "/jobs") {
      return this.#list(owner, url.searchParams);
    }
    const match = /^\/jobs\/([^/]+)(\/cancel)?$/.exec(url.pathname);
    if (match !== null) {
      const job = this.jobs.get(match[1]);
      if (job === undefined || job.owner !== owner) {
        return error(404, "not_found", "No such job");
      }
      if (req.method === "GET" && match[2] === undefined) {
        return Response.json(job.body);
      }
      if (req.method === "POST" && match[2] !== undefined) {
        return this.#cancel(job);
      }
      if (req.method === "DELETE" && match[2] === undefined) {
        this.jobs.delete(match[1]);
        return new Response(null, { status: 204 });
      }
    }
    if (req.method === "GET" && url.pathname === "/presets") {
      return Response.json({
        presets: [{ id: "balanced", name: "Balanced", description: "Even" }],
      });
    }
    return error(404, "not_found", "No such route");
  }

  #create(owner: string, request: JsonObject): Response {
    if (request.preset !== undefined && request.preset !== "balanced") {
      return error(400, "unknown_preset", "There is no preset 'x'");
    }
    const target = request.target as JsonObject;
    if (typeof target.size === "number" && target.size > 100 * 1024 * 1024) {
      return error(413, "file_too_large", "The target is too large");
    }
    const options = (request.mastering ?? {}) as JsonObject;
    const intensity = options.intensity ?? 1;
    if (typeof intensity !== "number" || intensity < 0 || intensity > 1) {
      return error(
        400,
        "invalid_request",
        "mastering.intensity must be between 0 and 1",
      );
    }
    const live = [...this.jobs.values()].filter((job) =>
      job.owner === owner &&
      !ENDED.has(String(job.body.status))
    ).length;
    if (live >= this.liveJobLimit) {
      return error(
        429,
        "too_many_jobs",
        `At most ${this.liveJobLimit} jobs may be running at once`,
      );
    }
    const loudness = options.loudness ??
      (request.preset !== undefined ? "preset" : "reference");
    const jobId = crypto.randomUUID();
    this.jobs.set(jobId, {
      owner,
      seq: ++this.#seq,
      body: jobBody(jobId, "awaiting_upload", {
        metadata: request.metadata ?? {},
        mode: request.mode ?? "master",
        // As the real API: a preview job's only results are the previews.
        previews: request.previews === true || request.mode === "preview",
        mastering: {
          loudness,
          loudness_lufs: typeof loudness === "number"
            ? loudness
            : loudness === "preset"
            ? BALANCED_LUFS
            : PLATFORM_LUFS[String(loudness)] ?? null,
          true_peak_dbtp: options.true_peak_dbtp ?? -1,
          intensity,
          limiter: options.limiter ?? "true_peak",
        },
      }),
    });
    const upload = (role: string) => ({
      url: `${this.url}/uploads-bucket`,
      fields: {
        key: `uploads/${jobId}/${role}`,
        "Content-Type": "audio/wav",
        policy: "e30=",
        "x-amz-signature": "abc",
      },
      expires_at: "2026-11-23T10:00:00.000Z",
    });
    const uploads: Record<string, unknown> = { target: upload("target") };
    if (request.reference !== undefined) {
      uploads.reference = upload("reference");
    }
    return Response.json(
      { job_id: jobId, status: "awaiting_upload", uploads },
      { status: 201 },
    );
  }

  /** `GET /jobs`: newest first, a page of `limit`, `cursor` = last seq seen. */
  #list(owner: string, query: URLSearchParams): Response {
    if (owner === "") {
      return error(400, "invalid_request", "X-Owner-Id is required");
    }
    const limitText = query.get("limit") ?? "20";
    const limit = Number(limitText);
    if (!/^\d+$/.test(limitText) || limit < 1 || limit > 100) {
      return error(400, "invalid_request", "limit must be from 1 to 100");
    }
    const status = query.get("status");
    if (
      status !== null && status !== "" &&
      !STATUSES.includes(status)
    ) {
      return error(400, "invalid_request", "status is not a job status");
    }
    const cursor = query.get("cursor");
    const before = cursor === null ? Infinity : Number(cursor);
    if (cursor !== null && !/^\d+$/.test(cursor)) {
      return error(400, "invalid_request", "cursor is not one of ours");
    }
    const matching = [...this.jobs.values()]
      .filter((job) =>
        job.owner === owner && job.seq < before &&
        (status === null || status === "" || job.body.status === status)
      )
      .sort((a, b) => b.seq - a.seq);
    const page = matching.slice(0, limit);
    const more = matching.length > limit;
    return Response.json({
      jobs: page.map(({ body }) => ({
        job_id: body.job_id,
        status: body.status,
        created_at: body.created_at,
        updated_at: body.updated_at,
        metadata: body.metadata,
        error: body.error,
      })),
      next_cursor: more ? String(page[page.length - 1].seq) : null,
    });
  }

  #cancel(job: FakeJob): Response {
    if (ENDED.has(String(job.body.status))) {
      return error(
        409,
        "job_finished",
        `The job already ended (${job.body.status})`,
      );
    }
    job.body = {
      ...job.body,
      status: "cancelled",
      progress: { stage: "cancelled", percent: 0 },
      updated_at: "2026-11-23T09:02:00.000Z",
    };
    return Response.json(job.body);
  }
}

function error(status: number, code: string, message: string): Response {
  return Response.json({ error: { code, message } }, { status });
}

/** Run `body` with a fake API that is always shut down afterwards. */
export async function withFakeApi(
  body: (api: FakeMasteringApi) => Promise<void>,
): Promise<void> {
  const api = new FakeMasteringApi();
  try {
    await body(api);
  } finally {
    await api.close();
  }
}
