/**
 * CORS and JSON responses, the way Supabase edge functions do them.
 *
 * Every response carries the CORS headers, errors included: a browser hides
 * the body of a cross-origin response without them, and Spectrum's UI needs
 * the `{error: {code, message}}` body to tell the user what went wrong.
 */

/**
 * `*` is safe here because nothing rides on cookies: the caller's identity is
 * the bearer JWT the browser puts in `Authorization` itself.
 */
export const corsHeaders: Readonly<Record<string, string>> = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers":
    "authorization, x-client-info, apikey, content-type",
  "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
};

/** The answer to a CORS preflight. */
export function preflight(): Response {
  return new Response("ok", { status: 200, headers: corsHeaders });
}

export function jsonResponse(
  status: number,
  body: unknown,
  extraHeaders: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: {
      ...corsHeaders,
      "Content-Type": "application/json",
      ...extraHeaders,
    },
  });
}

/** The one error shape of this function and of the mastering API. */
export function errorResponse(
  status: number,
  code: string,
  message: string,
  extraHeaders: Record<string, string> = {},
): Response {
  return jsonResponse(status, { error: { code, message } }, extraHeaders);
}

/** 204 has no body by definition; only the CORS headers go with it. */
export function noContent(): Response {
  return new Response(null, { status: 204, headers: corsHeaders });
}
