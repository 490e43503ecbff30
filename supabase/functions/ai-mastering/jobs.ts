/**
 * The job as the mastering API shows it (`GET /jobs/{id}`, the webhook's
 * `data`), and the minimal checks on the bodies this function receives.
 *
 * The API stays the authority on what a valid job request is: this module only
 * checks what this function itself relies on, so a browser gets a clear 400
 * without a round trip and nothing odd reaches the database.
 */

import { isUuid } from "./auth.ts";

export const JOB_STATUSES = [
  "awaiting_upload",
  "queued",
  "processing",
  "succeeded",
  "failed",
  "expired",
] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export const TERMINAL_STATUSES: ReadonlySet<JobStatus> = new Set([
  "succeeded",
  "failed",
  "expired",
]);

export type Json =
  | null
  | boolean
  | number
  | string
  | Json[]
  | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** The fields of a job body that the `mastering_jobs` row mirrors. */
export interface JobSnapshot {
  job_id: string;
  status: JobStatus;
  progress: JsonObject | null;
  error: JsonObject | null;
  results: JsonObject | null;
  metrics: JsonObject | null;
}

export type WebhookEventType = "job.succeeded" | "job.failed";

export interface JobEvent {
  type: WebhookEventType;
  data: JobSnapshot;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

export function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isStatus(value: unknown): value is JobStatus {
  return typeof value === "string" &&
    (JOB_STATUSES as readonly string[]).includes(value);
}

function objectOrNull(value: unknown): value is JsonObject | null | undefined {
  return value === undefined || value === null || isObject(value);
}

/** A job body from the API, reduced to what the row stores. */
export function parseJobSnapshot(value: unknown): Parsed<JobSnapshot> {
  if (!isObject(value)) {
    return { ok: false, message: "The job must be a JSON object" };
  }
  if (!isUuid(value.job_id)) {
    return { ok: false, message: "job_id must be a UUID" };
  }
  if (!isStatus(value.status)) {
    return { ok: false, message: "status is not a job status" };
  }
  for (const key of ["progress", "error", "results", "metrics"] as const) {
    if (!objectOrNull(value[key])) {
      return { ok: false, message: `${key} must be an object or null` };
    }
  }
  const pick = (key: string): JsonObject | null => {
    const field = value[key];
    return isObject(field) ? field : null;
  };
  return {
    ok: true,
    value: {
      job_id: value.job_id.toLowerCase(),
      status: value.status,
      progress: pick("progress"),
      error: pick("error"),
      results: pick("results"),
      metrics: pick("metrics"),
    },
  };
}

const EVENT_STATUS: Record<WebhookEventType, JobStatus> = {
  "job.succeeded": "succeeded",
  "job.failed": "failed",
};

/** `{type: "job.succeeded" | "job.failed", data: <job body>}`. */
export function parseJobEvent(value: unknown): Parsed<JobEvent> {
  if (!isObject(value)) {
    return { ok: false, message: "The webhook body must be a JSON object" };
  }
  const type = value.type;
  if (type !== "job.succeeded" && type !== "job.failed") {
    return {
      ok: false,
      message: "type must be 'job.succeeded' or 'job.failed'",
    };
  }
  const data = parseJobSnapshot(value.data);
  if (!data.ok) return { ok: false, message: `data: ${data.message}` };
  // The type and the status say the same thing twice; if they disagree the
  // sender is broken and neither can be trusted.
  if (data.value.status !== EVENT_STATUS[type]) {
    return {
      ok: false,
      message: `A ${type} event must carry a job with status '${
        EVENT_STATUS[type]
      }'`,
    };
  }
  return { ok: true, value: { type, data: data.value } };
}

/** `POST /jobs` as the browser sends it; checked only as far as we rely on it. */
export function checkCreateJobBody(value: unknown): Parsed<JsonObject> {
  if (!isObject(value)) {
    return { ok: false, message: "The body must be a JSON object" };
  }
  if (!isObject(value.target)) {
    return {
      ok: false,
      message: "target is required: {filename, size, content_type}",
    };
  }
  const hasReference = value.reference !== undefined &&
    value.reference !== null;
  const hasPreset = value.preset !== undefined && value.preset !== null;
  if (hasReference === hasPreset) {
    return {
      ok: false,
      message: "Give exactly one of reference or preset",
    };
  }
  if (hasReference && !isObject(value.reference)) {
    return {
      ok: false,
      message: "reference must be {filename, size, content_type}",
    };
  }
  if (hasPreset && typeof value.preset !== "string") {
    return { ok: false, message: "preset must be a preset id (a string)" };
  }
  if (value.outputs !== undefined && !Array.isArray(value.outputs)) {
    return { ok: false, message: "outputs must be a list of formats" };
  }
  if (value.metadata !== undefined && !isObject(value.metadata)) {
    return { ok: false, message: "metadata must be an object" };
  }
  return { ok: true, value };
}
