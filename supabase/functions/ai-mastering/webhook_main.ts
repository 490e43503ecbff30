/**
 * Entry point of the `ai-mastering-webhook` function (verify_jwt = false, see
 * supabase/config.toml): the same handler restricted to the signed webhook,
 * so the one deployment without a gateway JWT check never serves the routes
 * that trust a JWT.
 */

import { depsFromEnv } from "./deps.ts";
import { handler } from "./handler.ts";

const deps = depsFromEnv((name) => Deno.env.get(name), "webhook");

Deno.serve((req) => handler(req, deps));
