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
        },
      }
      : {},
    metrics: status === "succeeded"
      ? { duration_s: 8, result_lufs: -9.1, processing_s: 3.2 }
      : null,
    metadata: {},
    ...extra,
  } as JsonObject;
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
}

/**
 * The HTTP API of DESIGN.md, faked: API key check, owner scoping (another
 * owner's job is a 404, as in the real one), a few of the real error answers.
 * `override` answers the next request with a canned response instead.
 */
export class FakeMasteringApi {
  readonly requests: RecordedRequest[] = [];
  readonly jobs = new Map<string, FakeJob>();
  override: { status: number; body: unknown } | null = null;
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
    const match = /^\/jobs\/([^/]+)$/.exec(url.pathname);
    if (req.method === "GET" && match !== null) {
      const job = this.jobs.get(match[1]);
      if (job === undefined || job.owner !== owner) {
        return error(404, "not_found", "No such job");
      }
      return Response.json(job.body);
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
    const jobId = crypto.randomUUID();
    this.jobs.set(jobId, {
      owner,
      body: jobBody(jobId, "awaiting_upload", {
        metadata: request.metadata ?? {},
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
