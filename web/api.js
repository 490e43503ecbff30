// The mastering HTTP API and the presigned S3 upload, as the page uses them.
// Every failure is thrown as an ApiError carrying the API's error code (or one of the
// page's own: network, http_<status>, s3_<Code>) and the server's own message.

export class ApiError extends Error {
  /**
   * @param {string} code the API's error code, or the page's own for failures without one
   * @param {string} serverMessage what the server said, if anything
   * @param {number} status the HTTP status (0 when no answer arrived)
   */
  constructor(code, serverMessage, status) {
    super(serverMessage || code);
    this.code = code;
    this.serverMessage = serverMessage;
    this.status = status;
  }
}

// Guards against a stalled connection, not a slow job: each call is one small request.
const REQUEST_TIMEOUT_MS = 30_000;

export class MasteringApi {
  /** @param {{baseUrl: string, apiKey: string, ownerId: string}} connection */
  constructor({ baseUrl, apiKey, ownerId }) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.apiKey = apiKey;
    this.ownerId = ownerId;
  }

  health() {
    return this.#request("GET", "/health");
  }

  presets() {
    return this.#request("GET", "/presets");
  }

  createJob(body) {
    return this.#request("POST", "/jobs", body);
  }

  job(jobId) {
    return this.#request("GET", `/jobs/${encodeURIComponent(jobId)}`);
  }

  cancel(jobId) {
    return this.#request("POST", `/jobs/${encodeURIComponent(jobId)}/cancel`);
  }

  async #request(method, path, body) {
    const headers = { "X-Api-Key": this.apiKey };
    if (this.ownerId) headers["X-Owner-Id"] = this.ownerId;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        // The key is in a header; nothing else about this page is the API's business.
        credentials: "omit",
        cache: "no-store",
      });
    } catch (error) {
      // fetch says no more than "Failed to fetch" for a refused connection, a bad
      // address and a CORS refusal alike: the browser hides which, on purpose.
      const timedOut = error && error.name === "TimeoutError";
      throw new ApiError(timedOut ? "timeout" : "network", String(error.message || error), 0);
    }
    const text = await response.text();
    let answer = null;
    try {
      answer = text ? JSON.parse(text) : null;
    } catch {
      answer = null;
    }
    if (!response.ok) {
      const error = answer && typeof answer === "object" ? answer.error : null;
      if (error && typeof error.code === "string") {
        throw new ApiError(error.code, String(error.message || ""), response.status);
      }
      // API Gateway's own answers ({"message": "Not Found"}, throttling) have no code.
      const message = answer && typeof answer.message === "string" ? answer.message : text;
      throw new ApiError(`http_${response.status}`, message.slice(0, 500), response.status);
    }
    return answer;
  }
}

/**
 * Upload one file with a presigned POST: every field of the form as given, the file
 * last (S3 ignores fields after it). XMLHttpRequest rather than fetch because only it
 * reports upload progress.
 * @param {{url: string, fields: Record<string, string>}} form
 * @param {File} file
 * @param {(sent: number) => void} onProgress bytes of this file sent so far
 * @param {AbortSignal} signal
 */
export function uploadPresigned(form, file, onProgress, signal) {
  const data = new FormData();
  for (const [name, value] of Object.entries(form.fields)) data.append(name, value);
  data.append("file", file);
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", form.url);
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(Math.min(event.loaded, file.size));
    });
    request.addEventListener("load", () => {
      if (request.status >= 200 && request.status < 300) {
        onProgress(file.size);
        resolve();
        return;
      }
      reject(s3Error(request.status, request.responseText));
    });
    // Status 0: no answer the page may read (refused, unreachable, or CORS).
    request.addEventListener("error", () =>
      reject(new ApiError("upload_network", "", 0)),
    );
    request.addEventListener("abort", () => reject(new ApiError("aborted", "", 0)));
    if (signal) {
      if (signal.aborted) {
        reject(new ApiError("aborted", "", 0));
        return;
      }
      signal.addEventListener("abort", () => request.abort(), { once: true });
    }
    request.send(data);
  });
}

// S3 answers errors as XML: <Error><Code>EntityTooLarge</Code><Message>…</Message></Error>.
function s3Error(status, text) {
  let code = "";
  let message = "";
  try {
    const xml = new DOMParser().parseFromString(text, "application/xml");
    code = xml.querySelector("Error > Code")?.textContent ?? "";
    message = xml.querySelector("Error > Message")?.textContent ?? "";
  } catch {
    // Not XML: the status says enough.
  }
  return new ApiError(code ? `s3_${code}` : `http_${status}`, message || text.slice(0, 300), status);
}
