/**
 * Standard Webhooks verification (https://www.standardwebhooks.com), with the
 * maintained `standardwebhooks` package rather than hand-rolled HMAC code: it
 * compares signatures in constant time, accepts any of several space-separated
 * `v1,` signatures (secret rotation) and enforces a 5-minute timestamp window
 * in both directions. The Python sender in src/mastering/notify signs with the
 * same scheme and the same `whsec_...` secret.
 *
 * The version is pinned inline (`npm:...@1.1.1`) rather than through an import
 * map: Supabase documents the shared supabase/functions/deno.json as fit for
 * local development only (deployments read one in the function's own folder),
 * so an inline specifier is what resolves the same way in `deno test`,
 * `supabase functions serve` and a deployment.
 * That is why deno.json turns off the `no-import-prefix` lint rule.
 */

import { Webhook, WebhookVerificationError } from "npm:standardwebhooks@1.1.1";

export type Verification =
  | { ok: true; webhookId: string }
  | { ok: false; message: string };

/** A `webhook-id` is ours to store; anything longer than this is not one. */
const MAX_WEBHOOK_ID_LENGTH = 256;

export class WebhookVerifier {
  readonly #webhook: Webhook;

  /** Throws when the secret is not `whsec_<base64>` (or plain base64). */
  constructor(secret: string) {
    this.#webhook = new Webhook(secret);
  }

  /** Check signature and timestamp of the exact bytes that arrived. */
  verify(rawBody: string, headers: Headers): Verification {
    const webhookId = headers.get("webhook-id") ?? "";
    const timestamp = headers.get("webhook-timestamp") ?? "";
    const signature = headers.get("webhook-signature") ?? "";
    if (webhookId === "" || timestamp === "" || signature === "") {
      return {
        ok: false,
        message:
          "Missing webhook-id, webhook-timestamp or webhook-signature header",
      };
    }
    if (webhookId.length > MAX_WEBHOOK_ID_LENGTH) {
      return { ok: false, message: "webhook-id is too long" };
    }
    // The package's parseInt would read "1700000000abc" as a valid time.
    if (!/^\d{1,12}$/.test(timestamp)) {
      return { ok: false, message: "webhook-timestamp must be Unix seconds" };
    }
    try {
      // jsonParse off: a correctly signed body that is not JSON is a payload
      // problem, reported as such by the caller, not a signature failure.
      this.#webhook.verify(rawBody, {
        "webhook-id": webhookId,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature,
      }, { jsonParse: false });
    } catch (error) {
      if (error instanceof WebhookVerificationError) {
        return { ok: false, message: error.message };
      }
      throw error;
    }
    return { ok: true, webhookId };
  }
}
