/**
 * The `ai-mastering` edge function: a pure `(Request, Deps) => Response`, so
 * tests call it directly and index.ts / webhook_main.ts only wire it to
 * `Deno.serve` with dependencies from the environment.
 *
 * Routes (the path is `/<function slug>[/<rest>]` inside Supabase). The
 * owner is always the JWT's `sub`, never a body or query field:
 *   OPTIONS *                  CORS preflight
 *   POST   /ai-mastering (or /ai-mastering/jobs)   create a job
 *   GET    /ai-mastering?job_id=<uuid> (or /ai-mastering/jobs/<uuid>)
 *          the user's job (fresh result URLs)
 *   GET    /ai-mastering/jobs?status=&limit=&cursor=   the user's jobs, newest
 *          first, from the API (see listJobs for why not from the table)
 *   POST   /ai-mastering/jobs/<uuid>/cancel   cancel a live job
 *   DELETE /ai-mastering/jobs/<uuid>   cancel if live, delete files, job, row
 *   GET    /ai-mastering/presets (or ?presets)   the API's presets
 *   POST   /ai-mastering/webhook and the whole `ai-mastering-webhook`
 *          deployment: signed job.succeeded / job.failed / job.expired /
 *          job.cancelled events
 *
 * Webhook answers (the Python sender retries 408/425/429/5xx and network
 * errors, and gives up on any other status):
 *   204  applied to the row
 *   200  `{status: "duplicate"}`: this webhook-id was applied before. A 2xx,
 *        not 409, because the sender re-sends the same id when our first
 *        answer got lost; a 4xx would record a delivered event as failed.
 *   202  `{status: "ignored", reason: "unknown_job"}`: authentic, but no row
 *        exists (the job was not created through this function, e.g. by
 *        another client of the same API deployment, or it was deleted with
 *        its row: a DELETEd live job's job.cancelled). A row cannot be made
 *        without an owner, and retrying cannot help, so: accepted, logged.
 *   400  bad/missing signature, timestamp outside +-5 min, bad body
 *   409  the row already ended with a different terminal status
 *   500  misconfigured or database failure (the sender retries)
 */

import { callerFromAuthorization, isUuid } from "./auth.ts";
import { errorResponse, jsonResponse, noContent, preflight } from "./cors.ts";
import type { Deps } from "./deps.ts";
import {
  checkCreateJobBody,
  isObject,
  JOB_STATUSES,
  type JobSnapshot,
  type JobStatus,
  parseJobEvent,
  parseJobSnapshot,
} from "./jobs.ts";
import { type Upstream, UpstreamUnavailable } from "./mastering_api.ts";

/** A create body is a few hundred bytes; metadata is capped at 2 KB by the API. */
const MAX_CREATE_BODY_BYTES = 16 * 1024;
/** A job body with presigned URLs for four formats is a few KB. */
const MAX_WEBHOOK_BODY_BYTES = 256 * 1024;

/**
 * `root`: `/ai-mastering` itself (create, or one job by `?job_id=`);
 * `jobs`: the collection (list, create); `job`: one job by path (get,
 * delete); `cancel`: `jobs/<id>/cancel`. A path id is checked by the route
 * that uses it, so a malformed one is a clear 400 rather than a 404.
 */
type Route =
  | { name: "root" | "jobs" | "presets" | "webhook" }
  | { name: "job" | "cancel"; jobId: string };

function routeOf(url: URL, deps: Deps): Route | null {
  if (deps.routes === "webhook") return { name: "webhook" };
  const segments = url.pathname.split("/").filter((part) => part !== "");
  // Hosted and local Supabase pass `/<slug>/...`; tolerate a full
  // `/functions/v1/<slug>/...` path too. The slug itself is not checked, so a
  // deployment under another name routes the same way.
  if (segments[0] === "functions" && segments[1] === "v1") {
    segments.splice(0, 2);
  }
  const rest = segments.slice(1);
  if (rest.length === 0) {
    return { name: url.searchParams.has("presets") ? "presets" : "root" };
  }
  if (rest.length === 1 && rest[0] === "presets") return { name: "presets" };
  if (rest.length === 1 && rest[0] === "webhook") return { name: "webhook" };
  if (rest[0] === "jobs") {
    if (rest.length === 1) return { name: "jobs" };
    if (rest.length === 2) return { name: "job", jobId: rest[1] };
    if (rest.length === 3 && rest[2] === "cancel") {
      return { name: "cancel", jobId: rest[1] };
    }
  }
  return null;
}

function methodNotAllowed(allowed: string): Response {
  return errorResponse(
    405,
    "method_not_allowed",
    `Use ${allowed} here`,
    { Allow: `${allowed}, OPTIONS` },
  );
}

export async function handler(req: Request, deps: Deps): Promise<Response> {
  if (req.method === "OPTIONS") return preflight();
  const url = new URL(req.url);
  const route = routeOf(url, deps);
  if (route === null) return errorResponse(404, "not_found", "No such route");
  try {
    switch (route.name) {
      case "root":
        if (req.method === "POST") return await createJob(req, deps);
        if (req.method === "GET") {
          return await getJob(req, url.searchParams.get("job_id"), deps);
        }
        return methodNotAllowed("GET, POST");
      case "jobs":
        if (req.method === "POST") return await createJob(req, deps);
        if (req.method === "GET") return await listJobs(req, url, deps);
        return methodNotAllowed("GET, POST");
      case "job":
        if (req.method === "GET") return await getJob(req, route.jobId, deps);
        if (req.method === "DELETE") {
          return await deleteJob(req, route.jobId, deps);
        }
        return methodNotAllowed("GET, DELETE");
      case "cancel":
        if (req.method === "POST") {
          return await cancelJob(req, route.jobId, deps);
        }
        return methodNotAllowed("POST");
      case "presets":
        if (req.method === "GET") return await listPresets(deps);
        return methodNotAllowed("GET");
      case "webhook":
        if (req.method === "POST") return await receiveWebhook(req, deps);
        return methodNotAllowed("POST");
    }
  } catch (error) {
    // Never a stack trace to the caller; the log has the details.
    deps.log("error", "unexpected error", {
      route: route.name,
      error: error instanceof Error ? error.stack ?? error.message : error,
    });
    return errorResponse(500, "internal_error", "Something went wrong");
  }
}

function misconfigured(deps: Deps, what: string): Response {
  deps.log("error", "request refused: function misconfigured", { what });
  return errorResponse(
    500,
    "misconfigured",
    "The mastering function is not configured; the operators have been told",
  );
}

function unauthorized(message: string): Response {
  return errorResponse(401, "unauthorized", message, {
    "WWW-Authenticate": "Bearer",
  });
}

/** The body as text, or null when it is larger than `limit` bytes. */
async function readLimited(
  req: Request,
  limit: number,
): Promise<string | null> {
  const declared = Number(req.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > limit) return null;
  if (req.body === null) return "";
  // Counted while reading: Content-Length may be absent (chunked) or wrong.
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}

function tooLarge(limit: number): Response {
  return errorResponse(
    413,
    "request_too_large",
    `The request body must be at most ${limit} bytes`,
  );
}

/** An API answer that is not a success, as this function's answer. */
function upstreamFailure(upstream: Upstream, deps: Deps): Response {
  if (upstream.status === 401 || upstream.status === 403) {
    // Our API key was refused: the operators' problem, not the user's
    // sign-in, so it must not look like a 401 to the browser.
    return misconfigured(deps, `mastering API answered ${upstream.status}`);
  }
  const error = isObject(upstream.body) ? upstream.body.error : undefined;
  if (
    isObject(error) && typeof error.code === "string" &&
    typeof error.message === "string"
  ) {
    // The API's own errors (invalid_request, unknown_preset, file_too_large,
    // not_found...) are meant for the client: same status, same body.
    return errorResponse(upstream.status, error.code, error.message);
  }
  deps.log("error", "mastering API answered without an error body", {
    status: upstream.status,
  });
  return errorResponse(
    502,
    "upstream_error",
    "The mastering service answered unexpectedly",
  );
}

function unavailable(error: UpstreamUnavailable, deps: Deps): Response {
  deps.log("error", "mastering API unavailable", { reason: error.message });
  return error.timedOut
    ? errorResponse(
      504,
      "upstream_timeout",
      "The mastering service did not answer in time; try again",
    )
    : errorResponse(
      502,
      "upstream_unavailable",
      "The mastering service cannot be reached; try again",
    );
}

async function callApi(
  deps: Deps,
  call: () => Promise<Upstream>,
): Promise<Upstream | Response> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof UpstreamUnavailable) return unavailable(error, deps);
    throw error;
  }
}

async function createJob(req: Request, deps: Deps): Promise<Response> {
  const caller = signedInCaller(req, deps);
  if (caller instanceof Response) return caller;
  if (deps.api === null) return misconfigured(deps, "mastering API");
  if (deps.store === null) return misconfigured(deps, "job store");

  const text = await readLimited(req, MAX_CREATE_BODY_BYTES);
  if (text === null) return tooLarge(MAX_CREATE_BODY_BYTES);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return errorResponse(
      400,
      "invalid_request",
      "The request body is not valid JSON",
    );
  }
  const checked = checkCreateJobBody(body);
  if (!checked.ok) {
    return errorResponse(400, "invalid_request", checked.message);
  }

  const api = deps.api;
  const upstream = await callApi(
    deps,
    () => api.createJob(caller.userId, checked.value.body),
  );
  if (upstream instanceof Response) return upstream;
  if (upstream.status < 200 || upstream.status >= 300) {
    return upstreamFailure(upstream, deps);
  }
  const created = upstream.body;
  if (
    !isObject(created) || !isUuid(created.job_id) ||
    typeof created.status !== "string" ||
    !(JOB_STATUSES as readonly string[]).includes(created.status) ||
    !isObject(created.uploads)
  ) {
    deps.log("error", "mastering API created a job with an odd body", {
      status: upstream.status,
    });
    return errorResponse(
      502,
      "upstream_error",
      "The mastering service answered unexpectedly",
    );
  }
  const jobId = created.job_id.toLowerCase();
  const status = created.status as JobStatus;
  const asked = checked.value;
  // The API's 201 carries neither today (docs/openapi.json, JobCreated); use
  // its echo should it come, else the request's.
  const mode = typeof created.mode === "string" ? created.mode : asked.mode;
  const previews = typeof created.previews === "boolean"
    ? created.previews
    : asked.previews;

  try {
    await deps.store.upsertCreated({
      jobId,
      ownerId: caller.userId,
      status,
      metadata: isObject(asked.body.metadata) ? asked.body.metadata : {},
      // The API's echo when it gives one (resolved), else the request's: the
      // first synced job body replaces them with the resolved options.
      mastering: isObject(created.mastering)
        ? created.mastering
        : asked.mastering,
      mode,
      previews,
    });
  } catch (error) {
    // Without the row, RLS-scoped reads and Realtime would never show this
    // job, and its webhook would be ignored. The API job is left to expire
    // (nothing was uploaded); the user simply tries again.
    deps.log("error", "could not record a created job", {
      job_id: jobId,
      error: String(error),
    });
    return errorResponse(
      500,
      "internal_error",
      "The job could not be recorded; try again",
    );
  }
  deps.log("info", "job created", { job_id: jobId, owner_id: caller.userId });
  // mode and previews tell the UI what to wait for (results, previews, or
  // only an analysis) before the first job body arrives.
  return jsonResponse(201, {
    job_id: jobId,
    status,
    mode,
    previews,
    uploads: created.uploads,
  });
}

function signedInCaller(
  req: Request,
  deps: Deps,
): { userId: string } | Response {
  const caller = callerFromAuthorization(
    req.headers.get("authorization"),
    deps.now(),
  );
  return caller.ok ? { userId: caller.userId } : unauthorized(caller.message);
}

/** A job id from the query or the path, lower-cased; a 400 when malformed. */
function checkedJobId(jobId: string | null): string | Response {
  if (jobId === null || jobId === "") {
    return errorResponse(
      400,
      "invalid_request",
      "Give the job as ?job_id=<uuid> or /jobs/<uuid> (or ?presets for the presets)",
    );
  }
  if (!isUuid(jobId)) {
    return errorResponse(400, "invalid_request", "job_id must be a UUID");
  }
  return jobId.toLowerCase();
}

function oddJobBody(deps: Deps, jobId: string, problem: string): Response {
  deps.log("error", "mastering API returned an odd job body", {
    job_id: jobId,
    problem,
  });
  return errorResponse(
    502,
    "upstream_error",
    "The mastering service answered unexpectedly",
  );
}

/**
 * Mirror a job body the API just gave its owner. The caller asked for the
 * job, not for the mirror: a store failure is logged and the answer stands
 * (the job's webhook, or the next GET, brings the row up to date).
 */
async function syncRow(
  deps: Deps,
  ownerId: string,
  job: JobSnapshot,
): Promise<void> {
  if (deps.store === null) return;
  try {
    await deps.store.syncFromApi(ownerId, job);
  } catch (error) {
    deps.log("warn", "could not sync a job row", {
      job_id: job.job_id,
      error: String(error),
    });
  }
}

async function getJob(
  req: Request,
  rawJobId: string | null,
  deps: Deps,
): Promise<Response> {
  const caller = signedInCaller(req, deps);
  if (caller instanceof Response) return caller;
  if (deps.api === null) return misconfigured(deps, "mastering API");
  const jobId = checkedJobId(rawJobId);
  if (jobId instanceof Response) return jobId;

  const api = deps.api;
  const upstream = await callApi(
    deps,
    () => api.getJob(caller.userId, jobId),
  );
  if (upstream instanceof Response) return upstream;
  if (upstream.status !== 200) return upstreamFailure(upstream, deps);

  const snapshot = parseJobSnapshot(upstream.body);
  if (!snapshot.ok) return oddJobBody(deps, jobId, snapshot.message);
  await syncRow(deps, caller.userId, snapshot.value);
  return jsonResponse(200, upstream.body);
}

/** The list's query parameters; anything else in the query is dropped. */
const LIST_PARAMETERS = ["status", "limit", "cursor"] as const;

/**
 * The user's jobs from the API, not from `mastering_jobs`: the API is the
 * source of truth (it knows of an expiry or a cancellation before the row
 * does, and of jobs whose row could not be written), its cursor pages stay
 * stable, and the UI can already read the table itself under RLS. Values
 * (`status`, `limit` 1-100, `cursor`) are the API's to validate.
 */
async function listJobs(req: Request, url: URL, deps: Deps): Promise<Response> {
  const caller = signedInCaller(req, deps);
  if (caller instanceof Response) return caller;
  if (deps.api === null) return misconfigured(deps, "mastering API");

  const query: { status?: string; limit?: string; cursor?: string } = {};
  for (const name of LIST_PARAMETERS) {
    // `?status=` means no filter, as in the API.
    const value = url.searchParams.get(name);
    if (value !== null && value !== "") query[name] = value;
  }
  const api = deps.api;
  const upstream = await callApi(
    deps,
    () => api.listJobs(caller.userId, query),
  );
  if (upstream instanceof Response) return upstream;
  if (upstream.status !== 200) return upstreamFailure(upstream, deps);
  const page = upstream.body;
  if (
    !isObject(page) || !Array.isArray(page.jobs) ||
    !(page.next_cursor === null || typeof page.next_cursor === "string")
  ) {
    deps.log("error", "mastering API returned an odd job list", {});
    return errorResponse(
      502,
      "upstream_error",
      "The mastering service answered unexpectedly",
    );
  }
  return jsonResponse(200, page);
}

async function cancelJob(
  req: Request,
  rawJobId: string,
  deps: Deps,
): Promise<Response> {
  const caller = signedInCaller(req, deps);
  if (caller instanceof Response) return caller;
  if (deps.api === null) return misconfigured(deps, "mastering API");
  const jobId = checkedJobId(rawJobId);
  if (jobId instanceof Response) return jobId;

  const api = deps.api;
  const upstream = await callApi(
    deps,
    () => api.cancelJob(caller.userId, jobId),
  );
  if (upstream instanceof Response) return upstream;
  // 404 not_found (no such job for this user) and 409 job_finished (it had
  // already ended: the row learns how from its webhook) pass through as the
  // API's own errors.
  if (upstream.status !== 200) return upstreamFailure(upstream, deps);
  const snapshot = parseJobSnapshot(upstream.body);
  if (!snapshot.ok) return oddJobBody(deps, jobId, snapshot.message);
  // The row turns `cancelled` now, not only when job.cancelled arrives, so a
  // Realtime subscriber sees the cancel it asked for at once.
  await syncRow(deps, caller.userId, snapshot.value);
  deps.log("info", "job cancelled", {
    job_id: jobId,
    owner_id: caller.userId,
    status: snapshot.value.status,
  });
  return jsonResponse(200, upstream.body);
}

async function deleteJob(
  req: Request,
  rawJobId: string,
  deps: Deps,
): Promise<Response> {
  const caller = signedInCaller(req, deps);
  if (caller instanceof Response) return caller;
  if (deps.api === null) return misconfigured(deps, "mastering API");
  // The row must go too, or the UI would list a job that no longer exists.
  if (deps.store === null) return misconfigured(deps, "job store");
  const jobId = checkedJobId(rawJobId);
  if (jobId instanceof Response) return jobId;

  const api = deps.api;
  const upstream = await callApi(
    deps,
    () => api.deleteJob(caller.userId, jobId),
  );
  if (upstream instanceof Response) return upstream;
  const gone = upstream.status === 204 || upstream.status === 404;
  if (!gone) return upstreamFailure(upstream, deps);

  // On a 404 the API no longer has the job for this owner (deleted before,
  // e.g. by a DELETE whose row removal failed, or aged out): a row the
  // caller still has is stale and goes as well. Another user's row stays:
  // the delete is scoped to the caller.
  let removed: boolean;
  try {
    removed = await deps.store.deleteOwned(caller.userId, jobId);
  } catch (error) {
    deps.log("error", "could not remove a deleted job's row", {
      job_id: jobId,
      api_status: upstream.status,
      error: String(error),
    });
    return errorResponse(
      500,
      "internal_error",
      "The job's record could not be removed; try again",
    );
  }
  if (upstream.status === 404 && !removed) {
    return upstreamFailure(upstream, deps);
  }
  deps.log("info", "job deleted", {
    job_id: jobId,
    owner_id: caller.userId,
    api_status: upstream.status,
    row_removed: removed,
  });
  return noContent();
}

async function listPresets(deps: Deps): Promise<Response> {
  // Presets are the same for everyone: any caller the gateway let in may list
  // them, signed in or not (the anon key is enough).
  if (deps.api === null) return misconfigured(deps, "mastering API");
  const api = deps.api;
  const upstream = await callApi(deps, () => api.listPresets());
  if (upstream instanceof Response) return upstream;
  if (upstream.status !== 200 || !isObject(upstream.body)) {
    return upstreamFailure(upstream, deps);
  }
  return jsonResponse(200, upstream.body, {
    // Presets change with deployments only.
    "Cache-Control": "public, max-age=300",
  });
}

async function receiveWebhook(req: Request, deps: Deps): Promise<Response> {
  if (deps.webhook === null) return misconfigured(deps, "webhook secret");
  if (deps.store === null) return misconfigured(deps, "job store");

  // Verification needs the exact bytes that were signed: read text, never
  // req.json() followed by a re-serialisation.
  const raw = await readLimited(req, MAX_WEBHOOK_BODY_BYTES);
  if (raw === null) return tooLarge(MAX_WEBHOOK_BODY_BYTES);
  const verified = deps.webhook.verify(raw, req.headers);
  if (!verified.ok) {
    deps.log("warn", "webhook refused", { reason: verified.message });
    return errorResponse(400, "invalid_signature", verified.message);
  }

  let payload: unknown;
  try {
    payload = JSON.parse(raw);
  } catch {
    return errorResponse(400, "invalid_payload", "The body is not JSON");
  }
  const event = parseJobEvent(payload);
  if (!event.ok) {
    deps.log("warn", "webhook body refused", {
      webhook_id: verified.webhookId,
      reason: event.message,
    });
    return errorResponse(400, "invalid_payload", event.message);
  }

  const job = event.value.data;
  const fields = {
    webhook_id: verified.webhookId,
    job_id: job.job_id,
    type: event.value.type,
  };
  let outcome;
  try {
    outcome = await deps.store.applyWebhook(verified.webhookId, job);
  } catch (error) {
    deps.log("error", "could not store a webhook", {
      ...fields,
      error: String(error),
    });
    return errorResponse(
      500,
      "internal_error",
      "The event could not be stored; retry later",
    );
  }
  switch (outcome) {
    case "applied":
      deps.log("info", "webhook applied", fields);
      return noContent();
    case "duplicate":
      deps.log("info", "webhook already applied", fields);
      return jsonResponse(200, { status: "duplicate" });
    case "unknown_job":
      deps.log("warn", "webhook for a job without a row ignored", fields);
      return jsonResponse(202, { status: "ignored", reason: "unknown_job" });
    case "conflict":
      deps.log("error", "webhook contradicts an ended job", fields);
      return errorResponse(
        409,
        "conflict",
        "The job already ended with another status",
      );
  }
}
