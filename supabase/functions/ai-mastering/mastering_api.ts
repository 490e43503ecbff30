/**
 * The AWS mastering HTTP API (DESIGN.md "HTTP API"), as this function calls it.
 *
 * The API key stays on the server: the browser never sees it, and the end user
 * travels as `X-Owner-Id` (the Supabase user id), which is what scopes a job to
 * its owner on the API side.
 */

export type FetchFn = (
  input: Request | URL | string,
  init?: RequestInit,
) => Promise<Response>;

/** What the API answered: its status and its JSON body (null if not JSON). */
export interface Upstream {
  status: number;
  body: unknown;
}

/** The API could not be reached or did not answer in time. */
export class UpstreamUnavailable extends Error {
  constructor(readonly timedOut: boolean, message: string) {
    super(message);
    this.name = "UpstreamUnavailable";
  }
}

/**
 * Supabase ends an edge function's request after 150 s of wall time; the API's
 * routes answer in well under a second, so 20 s only bounds a hung connection.
 */
const DEFAULT_TIMEOUT_MS = 20_000;

export class MasteringApi {
  readonly #baseUrl: string;
  readonly #apiKey: string;
  readonly #fetch: FetchFn;
  readonly #timeoutMs: number;

  constructor(
    baseUrl: string,
    apiKey: string,
    fetchFn: FetchFn = fetch,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ) {
    this.#baseUrl = baseUrl.replace(/\/+$/, "");
    this.#apiKey = apiKey;
    this.#fetch = fetchFn;
    this.#timeoutMs = timeoutMs;
  }

  createJob(ownerId: string, body: unknown): Promise<Upstream> {
    return this.#call("POST", "/jobs", ownerId, body);
  }

  getJob(ownerId: string, jobId: string): Promise<Upstream> {
    // Callers pass a UUID; encoding anyway keeps a path out of the URL.
    return this.#call(
      "GET",
      `/jobs/${encodeURIComponent(jobId)}`,
      ownerId,
    );
  }

  /** `GET /jobs`: the owner's jobs, newest first, a page at a time. */
  listJobs(
    ownerId: string,
    query: { status?: string; limit?: string; cursor?: string },
  ): Promise<Upstream> {
    const params = new URLSearchParams();
    for (const key of ["status", "limit", "cursor"] as const) {
      const value = query[key];
      if (value !== undefined) params.set(key, value);
    }
    const search = params.size === 0 ? "" : `?${params}`;
    return this.#call("GET", `/jobs${search}`, ownerId);
  }

  cancelJob(ownerId: string, jobId: string): Promise<Upstream> {
    return this.#call(
      "POST",
      `/jobs/${encodeURIComponent(jobId)}/cancel`,
      ownerId,
    );
  }

  deleteJob(ownerId: string, jobId: string): Promise<Upstream> {
    return this.#call(
      "DELETE",
      `/jobs/${encodeURIComponent(jobId)}`,
      ownerId,
    );
  }

  listPresets(): Promise<Upstream> {
    return this.#call("GET", "/presets", null);
  }

  async #call(
    method: "GET" | "POST" | "DELETE",
    path: string,
    ownerId: string | null,
    body?: unknown,
  ): Promise<Upstream> {
    const headers: Record<string, string> = {
      "Accept": "application/json",
      "X-Api-Key": this.#apiKey,
    };
    if (ownerId !== null) headers["X-Owner-Id"] = ownerId;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let status: number;
    let text: string;
    try {
      // The timeout covers the body too: a stalled body is as bad as no answer.
      const response = await this.#fetch(`${this.#baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      status = response.status;
      text = await response.text();
    } catch (error) {
      const timedOut = error instanceof DOMException &&
        error.name === "TimeoutError";
      throw new UpstreamUnavailable(
        timedOut,
        timedOut
          ? `${method} ${path} timed out`
          : `${method} ${path} failed: ${String(error)}`,
      );
    }
    let parsed: unknown = null;
    try {
      parsed = text === "" ? null : JSON.parse(text);
    } catch {
      parsed = null;
    }
    return { status, body: parsed };
  }
}
