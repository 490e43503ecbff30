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
  "cancelled",
] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export const TERMINAL_STATUSES: ReadonlySet<JobStatus> = new Set([
  "succeeded",
  "failed",
  "expired",
  "cancelled",
]);

/** `mode` of `POST /jobs` (DESIGN.md "Previews and modes"). */
export const JOB_MODES = ["master", "preview", "analyze"] as const;
export type JobMode = (typeof JOB_MODES)[number];
/** What the API does when a create request names no mode. */
export const DEFAULT_MODE: JobMode = "master";

export type Json =
  | null
  | boolean
  | number
  | string
  | Json[]
  | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/**
 * The fields of a job body that the `mastering_jobs` row mirrors. The last
 * five came with the mastering options, previews and modes; an API that does
 * not send them yet gives null here, and the row keeps what it had (no
 * warnings and no analysis are stored as such).
 */
export interface JobSnapshot {
  job_id: string;
  status: JobStatus;
  progress: JsonObject | null;
  error: JsonObject | null;
  /** `{<format> | preview_target | preview_result: {url, expires_at, size, lufs?, true_peak_dbtp?}}` */
  results: JsonObject | null;
  metrics: JsonObject | null;
  /** The resolved options: `{loudness, loudness_lufs, true_peak_dbtp, intensity, limiter}`. */
  mastering: JsonObject | null;
  /** `[{code, message}]`, e.g. `loudness_not_reached`. */
  warnings: JsonObject[] | null;
  /** `{target, reference?, result?, band_centres_hz}`. */
  analysis: JsonObject | null;
  /**
   * Any string: the API owns the set of modes, and a mode added there must
   * not make this function refuse (and the sender retry) a job's events.
   */
  mode: string | null;
  /** Whether the job renders `results.preview_target` / `preview_result`. */
  previews: boolean | null;
}

export const WEBHOOK_EVENT_TYPES = [
  "job.succeeded",
  "job.failed",
  "job.expired",
  "job.cancelled",
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

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
  const objectFields = [
    "progress",
    "error",
    "results",
    "metrics",
    "mastering",
    "analysis",
  ] as const;
  for (const key of objectFields) {
    if (!objectOrNull(value[key])) {
      return { ok: false, message: `${key} must be an object or null` };
    }
  }
  const warnings = value.warnings;
  if (
    warnings !== undefined && warnings !== null &&
    !(Array.isArray(warnings) && warnings.every(isObject))
  ) {
    return {
      ok: false,
      message: "warnings must be a list of {code, message} objects or null",
    };
  }
  const mode = value.mode;
  if (mode !== undefined && mode !== null && typeof mode !== "string") {
    return { ok: false, message: "mode must be a string or null" };
  }
  const previews = value.previews;
  if (
    previews !== undefined && previews !== null &&
    typeof previews !== "boolean"
  ) {
    return { ok: false, message: "previews must be true, false or null" };
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
      mastering: pick("mastering"),
      warnings: Array.isArray(warnings) ? warnings as JsonObject[] : null,
      analysis: pick("analysis"),
      mode: typeof mode === "string" ? mode : null,
      previews: typeof previews === "boolean" ? previews : null,
    },
  };
}

const EVENT_STATUS: Record<WebhookEventType, JobStatus> = {
  "job.succeeded": "succeeded",
  "job.failed": "failed",
  "job.expired": "expired",
  "job.cancelled": "cancelled",
};

function isEventType(value: unknown): value is WebhookEventType {
  return typeof value === "string" &&
    (WEBHOOK_EVENT_TYPES as readonly string[]).includes(value);
}

/** `{type: "job.succeeded" | "job.failed" | "job.expired" | "job.cancelled", data: <job body>}`. */
export function parseJobEvent(value: unknown): Parsed<JobEvent> {
  if (!isObject(value)) {
    return { ok: false, message: "The webhook body must be a JSON object" };
  }
  const type = value.type;
  if (!isEventType(type)) {
    return {
      ok: false,
      message: `type must be one of ${
        WEBHOOK_EVENT_TYPES.map((name) => `'${name}'`).join(", ")
      }`,
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

/** A create request that passed this function's checks, forwarded unchanged. */
export interface CreateJobRequest {
  /** The body exactly as the browser sent it: the API validates values. */
  body: JsonObject;
  mode: JobMode;
  /** The options as asked (unresolved), or null when none were given. */
  mastering: JsonObject | null;
  /**
   * Whether the job will render the two previews: asked for, or implied by
   * `mode: "preview"`, whose only results they are (DESIGN.md "Previews and
   * modes"). The first synced job body replaces it with the API's own value.
   */
  previews: boolean;
}

/**
 * Body fields that would name an owner. The owner is the JWT's user and
 * travels as X-Owner-Id; the API would refuse these as unknown fields anyway,
 * but a request that tries to choose its owner deserves its own answer, and
 * must never get as far as the API.
 */
const OWNER_FIELDS = ["owner", "owner_id", "user_id"] as const;

function isMode(value: unknown): value is JobMode {
  return typeof value === "string" &&
    (JOB_MODES as readonly string[]).includes(value);
}

/** Absent, or null: the API takes null for "the default" in each option. */
function unset(value: unknown): value is undefined | null {
  return value === undefined || value === null;
}

/** The `mastering` options' types (ranges and platform ids are the API's). */
function checkMasteringOptions(value: JsonObject): string | null {
  const { loudness, true_peak_dbtp, intensity, limiter } = value;
  if (
    !unset(loudness) && typeof loudness !== "string" &&
    typeof loudness !== "number"
  ) {
    return "mastering.loudness must be 'reference', a LUFS number or a platform id";
  }
  if (!unset(true_peak_dbtp) && typeof true_peak_dbtp !== "number") {
    return "mastering.true_peak_dbtp must be a number (dBTP)";
  }
  if (!unset(intensity) && typeof intensity !== "number") {
    return "mastering.intensity must be a number from 0 to 1";
  }
  if (!unset(limiter) && typeof limiter !== "string") {
    return "mastering.limiter must be 'true_peak' or 'matchering'";
  }
  return null;
}

/**
 * `POST /jobs` as the browser sends it; checked only as far as we rely on it.
 * `mode` is checked against the known modes because the rule for reference
 * and preset depends on it: `analyze` measures the inputs and needs neither.
 */
export function checkCreateJobBody(value: unknown): Parsed<CreateJobRequest> {
  if (!isObject(value)) {
    return { ok: false, message: "The body must be a JSON object" };
  }
  const named = OWNER_FIELDS.find((field) => field in value);
  if (named !== undefined) {
    return {
      ok: false,
      message:
        `${named} cannot be given: a job belongs to the signed-in user who creates it`,
    };
  }
  if (!isObject(value.target)) {
    return {
      ok: false,
      message: "target is required: {filename, size, content_type}",
    };
  }
  const mode = value.mode ?? DEFAULT_MODE;
  if (!isMode(mode)) {
    return {
      ok: false,
      message: `mode must be one of ${
        JOB_MODES.map((name) => `'${name}'`).join(", ")
      }`,
    };
  }
  const hasReference = value.reference !== undefined &&
    value.reference !== null;
  const hasPreset = value.preset !== undefined && value.preset !== null;
  if (hasReference && hasPreset) {
    return {
      ok: false,
      message: mode === "analyze"
        ? "Give at most one of reference or preset"
        : "Give exactly one of reference or preset",
    };
  }
  if (!hasReference && !hasPreset && mode !== "analyze") {
    return {
      ok: false,
      message:
        "Give exactly one of reference or preset (only mode 'analyze' needs neither)",
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
  const mastering = value.mastering;
  if (mastering !== undefined && mastering !== null) {
    if (!isObject(mastering)) {
      return {
        ok: false,
        message:
          "mastering must be an object: {loudness?, true_peak_dbtp?, intensity?, limiter?}",
      };
    }
    const problem = checkMasteringOptions(mastering);
    if (problem !== null) return { ok: false, message: problem };
  }
  if (value.previews !== undefined && typeof value.previews !== "boolean") {
    return { ok: false, message: "previews must be true or false" };
  }
  return {
    ok: true,
    value: {
      body: value,
      mode,
      mastering: isObject(mastering) ? mastering : null,
      previews: value.previews === true || mode === "preview",
    },
  };
}
