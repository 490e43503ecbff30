/**
 * Entry point of the `ai-mastering` function (verify_jwt = true): the API
 * routes for Spectrum's UI, plus the webhook route. See handler.ts.
 */

import { depsFromEnv } from "./deps.ts";
import { handler } from "./handler.ts";

// Built once per isolate: config does not change while it lives.
const deps = depsFromEnv((name) => Deno.env.get(name), "all");

Deno.serve((req) => handler(req, deps));
