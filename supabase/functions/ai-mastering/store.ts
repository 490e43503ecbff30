/**
 * The `public.mastering_jobs` mirror that Spectrum's UI reads and subscribes to.
 *
 * The mastering API is the source of truth; this table is a per-user copy that
 * Supabase can protect with RLS and push over Realtime. Two implementations:
 * `PostgrestJobStore` for production (plain fetch to PostgREST with the
 * service-role key: no client library, nothing to load at cold start) and
 * `MemoryJobStore` for tests, which keeps the same rules as the SQL functions
 * in supabase/migrations/ (the latest definition of each function counts).
 */

import type { FetchFn } from "./mastering_api.ts";
import {
  JOB_STATUSES,
  type JobSnapshot,
  type JobStatus,
  type JsonObject,
  TERMINAL_STATUSES,
} from "./jobs.ts";

export interface CreatedJob {
  jobId: string;
  ownerId: string;
  status: JobStatus;
  metadata: JsonObject;
  /** The options as the API echoed them, else as asked; null if none. */
  mastering: JsonObject | null;
  mode: string;
  /** Whether previews were asked for (or implied by `mode: "preview"`). */
  previews: boolean;
}

/** One row of `public.mastering_jobs`, as PostgREST returns it. */
export interface JobRow {
  job_id: string;
  owner_id: string;
  status: JobStatus;
  progress: JsonObject | null;
  error: JsonObject | null;
  results: JsonObject | null;
  metrics: JsonObject | null;
  /** As asked at creation; the resolved options once a job body was synced. */
  mastering: JsonObject | null;
  /** `[{code, message}]`; empty until the job body says otherwise. */
  warnings: JsonObject[];
  analysis: JsonObject | null;
  mode: string;
  /** Whether the job renders `results.preview_target` / `preview_result`. */
  previews: boolean;
  metadata: JsonObject | null;
  last_webhook_id: string | null;
  created_at: string;
  updated_at: string;
}

/**
 * What a verified webhook did to the mirror:
 * - `applied`: the row now shows the event's job;
 * - `duplicate`: this `webhook-id` was applied before (a retry or a replay);
 * - `unknown_job`: no row for the job, so no owner to give one (see handler.ts);
 * - `conflict`: the row already ended with another terminal status.
 */
export type WebhookOutcome =
  | "applied"
  | "duplicate"
  | "unknown_job"
  | "conflict";

const OUTCOMES: ReadonlySet<string> = new Set([
  "applied",
  "duplicate",
  "unknown_job",
  "conflict",
]);

export interface JobStore {
  /** Record a job just created for `ownerId` (insert, or merge on job_id). */
  upsertCreated(job: CreatedJob): Promise<void>;
  /** Apply a verified `job.*` event, once per webhook id. */
  applyWebhook(webhookId: string, job: JobSnapshot): Promise<WebhookOutcome>;
  /**
   * Bring a still-running row up to date with what the API just told its
   * owner (a GET or a cancel). This is how progress reaches Realtime
   * subscribers, and how an end reaches the row when its webhook is late or
   * lost; an ended row is left to the webhook.
   */
  syncFromApi(ownerId: string, job: JobSnapshot): Promise<void>;
  /**
   * Remove `ownerId`'s row of the job (its webhook deliveries go with it);
   * false when there was none. Another owner's row is never touched.
   */
  deleteOwned(ownerId: string, jobId: string): Promise<boolean>;
  get(jobId: string): Promise<JobRow | null>;
}

export class StoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StoreError";
  }
}

/** Key order matters here, unlike jsonb equality; the tests build bodies alike. */
function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The columns a job body sets, as in the SQL functions' `set` lists. */
type MirroredFields = Pick<
  JobRow,
  | "status"
  | "progress"
  | "error"
  | "results"
  | "metrics"
  | "mastering"
  | "warnings"
  | "analysis"
  | "mode"
  | "previews"
>;

/** In-memory store with the same rules as the SQL functions; for tests. */
export class MemoryJobStore implements JobStore {
  readonly rows = new Map<string, JobRow>();
  readonly deliveries = new Set<string>();
  readonly #now: () => Date;

  constructor(now: () => Date = () => new Date()) {
    this.#now = now;
  }

  upsertCreated(job: CreatedJob): Promise<void> {
    const now = this.#now().toISOString();
    const existing = this.rows.get(job.jobId);
    this.rows.set(job.jobId, {
      job_id: job.jobId,
      owner_id: job.ownerId,
      status: job.status,
      progress: { stage: job.status, percent: 0 },
      error: existing?.error ?? null,
      results: existing?.results ?? null,
      metrics: existing?.metrics ?? null,
      mastering: job.mastering,
      warnings: existing?.warnings ?? [],
      analysis: existing?.analysis ?? null,
      mode: job.mode,
      previews: job.previews,
      metadata: job.metadata,
      last_webhook_id: existing?.last_webhook_id ?? null,
      created_at: existing?.created_at ?? now,
      updated_at: now,
    });
    return Promise.resolve();
  }

  applyWebhook(webhookId: string, job: JobSnapshot): Promise<WebhookOutcome> {
    const row = this.rows.get(job.job_id);
    if (row === undefined) return Promise.resolve("unknown_job");
    if (TERMINAL_STATUSES.has(row.status) && row.status !== job.status) {
      return Promise.resolve("conflict");
    }
    if (this.deliveries.has(webhookId)) return Promise.resolve("duplicate");
    this.deliveries.add(webhookId);
    this.rows.set(job.job_id, {
      ...row,
      ...mirrored(row, job),
      last_webhook_id: webhookId,
      updated_at: this.#now().toISOString(),
    });
    return Promise.resolve("applied");
  }

  syncFromApi(ownerId: string, job: JobSnapshot): Promise<void> {
    const row = this.rows.get(job.job_id);
    if (
      row === undefined || row.owner_id !== ownerId ||
      TERMINAL_STATUSES.has(row.status) ||
      JOB_STATUSES.indexOf(job.status) < JOB_STATUSES.indexOf(row.status)
    ) {
      return Promise.resolve();
    }
    const fields = mirrored(row, job);
    const unchanged = (Object.keys(fields) as (keyof MirroredFields)[])
      .every((key) => sameJson(row[key], fields[key]));
    if (unchanged) return Promise.resolve();
    this.rows.set(job.job_id, {
      ...row,
      ...fields,
      updated_at: this.#now().toISOString(),
    });
    return Promise.resolve();
  }

  deleteOwned(ownerId: string, jobId: string): Promise<boolean> {
    const row = this.rows.get(jobId);
    if (row === undefined || row.owner_id !== ownerId) {
      return Promise.resolve(false);
    }
    this.rows.delete(jobId);
    // The deliveries table cascades with its job in SQL; this set has no
    // job ids, and a replayed event for a deleted job finds no row anyway.
    return Promise.resolve(true);
  }

  get(jobId: string): Promise<JobRow | null> {
    const row = this.rows.get(jobId);
    return Promise.resolve(row === undefined ? null : structuredClone(row));
  }
}

/**
 * What a job body writes into its row. Options, mode and previews fall back
 * to what the row has, so a body from an API that does not send them yet
 * keeps the values recorded at creation; no warnings is an empty list.
 */
function mirrored(row: JobRow, job: JobSnapshot): MirroredFields {
  return {
    status: job.status,
    progress: job.progress,
    error: job.error,
    results: job.results,
    metrics: job.metrics,
    mastering: job.mastering ?? row.mastering,
    warnings: job.warnings ?? [],
    analysis: job.analysis,
    mode: job.mode ?? row.mode,
    previews: job.previews ?? row.previews,
  };
}

const STORE_TIMEOUT_MS = 10_000;

/**
 * PostgREST with the service-role key, which bypasses RLS: users may only
 * read their rows, so every write goes through here. The webhook and sync
 * rules live in SQL functions so that check-and-write is one transaction.
 */
export class PostgrestJobStore implements JobStore {
  readonly #restUrl: string;
  readonly #key: string;
  readonly #fetch: FetchFn;

  constructor(supabaseUrl: string, serviceRoleKey: string, fetchFn: FetchFn) {
    this.#restUrl = `${supabaseUrl.replace(/\/+$/, "")}/rest/v1`;
    this.#key = serviceRoleKey;
    this.#fetch = fetchFn;
  }

  async upsertCreated(job: CreatedJob): Promise<void> {
    await this.#request(
      "POST",
      "/mastering_jobs?on_conflict=job_id",
      {
        job_id: job.jobId,
        owner_id: job.ownerId,
        status: job.status,
        progress: { stage: job.status, percent: 0 },
        metadata: job.metadata,
        mastering: job.mastering,
        mode: job.mode,
        previews: job.previews,
        updated_at: new Date().toISOString(),
      },
      "resolution=merge-duplicates,return=minimal",
    );
  }

  async applyWebhook(
    webhookId: string,
    job: JobSnapshot,
  ): Promise<WebhookOutcome> {
    const outcome = await this.#request(
      "POST",
      "/rpc/apply_mastering_webhook",
      {
        p_webhook_id: webhookId,
        p_job_id: job.job_id,
        p_status: job.status,
        p_progress: job.progress,
        p_error: job.error,
        p_results: job.results,
        p_metrics: job.metrics,
        p_mastering: job.mastering,
        p_warnings: job.warnings,
        p_analysis: job.analysis,
        p_mode: job.mode,
        p_previews: job.previews,
      },
    );
    if (typeof outcome !== "string" || !OUTCOMES.has(outcome)) {
      throw new StoreError(
        `apply_mastering_webhook answered ${JSON.stringify(outcome)}`,
      );
    }
    return outcome as WebhookOutcome;
  }

  async syncFromApi(ownerId: string, job: JobSnapshot): Promise<void> {
    await this.#request("POST", "/rpc/sync_mastering_job", {
      p_job_id: job.job_id,
      p_owner_id: ownerId,
      p_status: job.status,
      p_progress: job.progress,
      p_error: job.error,
      p_results: job.results,
      p_metrics: job.metrics,
      p_mastering: job.mastering,
      p_warnings: job.warnings,
      p_analysis: job.analysis,
      p_mode: job.mode,
      p_previews: job.previews,
    });
  }

  async deleteOwned(ownerId: string, jobId: string): Promise<boolean> {
    // One statement, so no read-then-delete race; the owner filter keeps a
    // caller from removing another user's row whatever the API answered.
    const removed = await this.#request(
      "DELETE",
      `/mastering_jobs?job_id=eq.${encodeURIComponent(jobId)}&owner_id=eq.${
        encodeURIComponent(ownerId)
      }&select=job_id`,
      undefined,
      "return=representation",
    );
    if (!Array.isArray(removed)) {
      throw new StoreError("PostgREST did not answer a list of rows");
    }
    return removed.length > 0;
  }

  async get(jobId: string): Promise<JobRow | null> {
    const rows = await this.#request(
      "GET",
      `/mastering_jobs?job_id=eq.${encodeURIComponent(jobId)}&select=*`,
    );
    if (!Array.isArray(rows)) {
      throw new StoreError("PostgREST did not answer a list of rows");
    }
    return rows.length === 0 ? null : rows[0] as JobRow;
  }

  async #request(
    method: "GET" | "POST" | "DELETE",
    path: string,
    body?: unknown,
    prefer?: string,
  ): Promise<unknown> {
    // Both headers, as supabase-js sends them: `apikey` is what the gateway
    // routes on, `Authorization` is the role PostgREST runs the query as.
    const headers: Record<string, string> = {
      "apikey": this.#key,
      "Authorization": `Bearer ${this.#key}`,
      "Accept": "application/json",
    };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (prefer !== undefined) headers["Prefer"] = prefer;
    let status: number;
    let text: string;
    try {
      const response = await this.#fetch(`${this.#restUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(STORE_TIMEOUT_MS),
      });
      status = response.status;
      text = await response.text();
    } catch (error) {
      throw new StoreError(`${method} ${path} failed: ${String(error)}`);
    }
    if (status < 200 || status >= 300) {
      // PostgREST errors are {code, message, details, hint}: no secrets.
      throw new StoreError(
        `${method} ${path.split("?")[0]} answered ${status}: ${
          text.slice(0, 300)
        }`,
      );
    }
    if (text === "") return null;
    try {
      return JSON.parse(text);
    } catch {
      throw new StoreError(`${method} ${path} answered non-JSON`);
    }
  }
}
