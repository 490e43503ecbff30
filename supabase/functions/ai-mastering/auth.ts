/**
 * Who is calling: the Supabase user id from the bearer JWT.
 *
 * The signature is NOT checked here. The `ai-mastering` function is deployed
 * with `verify_jwt = true` (supabase/config.toml), so the Supabase gateway has
 * already verified signature and expiry before the request reaches this code.
 * What is left for us is to refuse tokens that are valid but carry no user
 * (the anon key is a valid JWT without `sub`) and anything malformed, and to
 * read the user id. This is also why the webhook deployment, which runs with
 * `verify_jwt = false`, never serves these routes (see handler.ts).
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: unknown): value is string {
  return typeof value === "string" && UUID.test(value);
}

export type CallerResult =
  | { ok: true; userId: string }
  | { ok: false; message: string };

function decodeBase64Url(segment: string): Uint8Array | null {
  if (!/^[A-Za-z0-9_-]+$/.test(segment)) return null;
  const base64 = segment.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  try {
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

/** The JWT payload as an object, or null when the token is not a JWT. */
export function decodeJwtPayload(
  token: string,
): Record<string, unknown> | null {
  const parts = token.split(".");
  if (parts.length !== 3 || parts.some((part) => part.length === 0)) {
    return null;
  }
  const bytes = decodeBase64Url(parts[1]);
  if (bytes === null) return null;
  try {
    const payload: unknown = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(bytes),
    );
    if (
      typeof payload !== "object" || payload === null || Array.isArray(payload)
    ) {
      return null;
    }
    return payload as Record<string, unknown>;
  } catch {
    return null;
  }
}

/**
 * The signed-in user's id (`sub`, a UUID in Supabase Auth) from an
 * `Authorization: Bearer <jwt>` header.
 */
export function callerFromAuthorization(
  header: string | null,
  now: Date,
): CallerResult {
  if (header === null || header.trim() === "") {
    return { ok: false, message: "Sign in first: no Authorization header" };
  }
  const match = /^Bearer\s+(\S+)$/i.exec(header.trim());
  if (match === null) {
    return {
      ok: false,
      message: "The Authorization header must be 'Bearer <access token>'",
    };
  }
  const payload = decodeJwtPayload(match[1]);
  if (payload === null) {
    return { ok: false, message: "The access token is not a valid JWT" };
  }
  if (!isUuid(payload.sub)) {
    // The anon key (and the service key) pass the gateway but are not a user.
    return {
      ok: false,
      message: "The access token does not belong to a signed-in user",
    };
  }
  // The gateway checked expiry already; checking again costs nothing and
  // keeps a token that expired in flight from starting paid work.
  if (typeof payload.exp === "number" && payload.exp * 1000 <= now.getTime()) {
    return { ok: false, message: "The access token has expired" };
  }
  return { ok: true, userId: payload.sub.toLowerCase() };
}
