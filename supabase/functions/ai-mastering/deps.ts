/**
 * What the handler needs, built from the environment in production and by hand
 * in tests. Each capability is null when its configuration is missing: the
 * routes that need it answer 500 `misconfigured` instead of the function
 * crashing at start-up (a crash would surface as an opaque gateway error).
 */

import { type FetchFn, MasteringApi } from "./mastering_api.ts";
import { type JobStore, PostgrestJobStore } from "./store.ts";
import { WebhookVerifier } from "./webhook.ts";

export type LogLevel = "info" | "warn" | "error";
export type Logger = (
  level: LogLevel,
  message: string,
  fields?: Record<string, unknown>,
) => void;

/**
 * `all`: the `ai-mastering` deployment (verify_jwt = true): API routes and the
 * webhook. `webhook`: the `ai-mastering-webhook` deployment (verify_jwt =
 * false): the webhook only, because with no gateway check a JWT could be
 * forged, and the API routes trust the JWT's `sub`.
 */
export type RouteSet = "all" | "webhook";

export interface Deps {
  api: MasteringApi | null;
  store: JobStore | null;
  webhook: WebhookVerifier | null;
  routes: RouteSet;
  log: Logger;
  now: () => Date;
}

/** One JSON line per event: what Supabase's log explorer indexes best. */
export const consoleLogger: Logger = (level, message, fields = {}) => {
  const line = JSON.stringify({ level, message, ...fields });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
};

function httpUrl(value: string): string | null {
  try {
    const url = new URL(value);
    return url.protocol === "https:" || url.protocol === "http:"
      ? value.replace(/\/+$/, "")
      : null;
  } catch {
    return null;
  }
}

/**
 * MASTERING_API_URL, MASTERING_API_KEY, MASTERING_WEBHOOK_SECRET, SUPABASE_URL
 * and SUPABASE_SERVICE_ROLE_KEY (the last two are set by Supabase itself).
 * Problems are logged by name only; values are secrets.
 */
export function depsFromEnv(
  env: (name: string) => string | undefined,
  routes: RouteSet,
  options: { fetch?: FetchFn; log?: Logger } = {},
): Deps {
  const log = options.log ?? consoleLogger;
  const fetchFn = options.fetch ?? fetch;
  const read = (name: string) => (env(name) ?? "").trim();
  const problems: string[] = [];

  let api: MasteringApi | null = null;
  const apiUrl = httpUrl(read("MASTERING_API_URL"));
  const apiKey = read("MASTERING_API_KEY");
  // The webhook deployment never calls the API: no need to nag about it there.
  if (routes === "all") {
    if (apiUrl === null) problems.push("MASTERING_API_URL (an http(s) URL)");
    if (apiKey === "") problems.push("MASTERING_API_KEY");
  }
  if (routes === "all" && apiUrl !== null && apiKey !== "") {
    api = new MasteringApi(apiUrl, apiKey, fetchFn);
  }

  let store: JobStore | null = null;
  const supabaseUrl = httpUrl(read("SUPABASE_URL"));
  const serviceKey = read("SUPABASE_SERVICE_ROLE_KEY");
  if (supabaseUrl === null) problems.push("SUPABASE_URL");
  if (serviceKey === "") problems.push("SUPABASE_SERVICE_ROLE_KEY");
  if (supabaseUrl !== null && serviceKey !== "") {
    store = new PostgrestJobStore(supabaseUrl, serviceKey, fetchFn);
  }

  let webhook: WebhookVerifier | null = null;
  const secret = read("MASTERING_WEBHOOK_SECRET");
  if (secret === "") {
    problems.push("MASTERING_WEBHOOK_SECRET");
  } else {
    try {
      webhook = new WebhookVerifier(secret);
    } catch {
      problems.push("MASTERING_WEBHOOK_SECRET (must be whsec_<base64>)");
    }
  }

  if (problems.length > 0) {
    log("error", "configuration missing or invalid", { problems });
  }
  return { api, store, webhook, routes, log, now: () => new Date() };
}
