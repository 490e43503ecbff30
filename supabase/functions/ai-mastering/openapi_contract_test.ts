/**
 * The function's view of the mastering API held against the API's own
 * machine-readable contract, docs/openapi.json (generated from the models
 * that validate requests, and kept current by the Python tests): every call
 * MasteringApi makes is an operation there, with declared parameters and
 * answers; the statuses and modes the function knows are the API's; the
 * create check refuses ill-typed fields by name and never refuses what the
 * API takes; the job body fields the table mirrors are ones the API always
 * sends.
 *
 * Needs read access to ../../../docs: tests/local/test_edge_integration.py
 * runs it with `--allow-read=.,../../docs`. Without that permission (the
 * plain `deno test` of package.json, which reads only this folder and the
 * migrations) it is reported as ignored.
 */

import assert from "node:assert/strict";
import {
  checkCreateJobBody,
  DEFAULT_MODE,
  JOB_MODES,
  JOB_STATUSES,
  type JsonObject,
  parseJobSnapshot,
} from "./jobs.ts";
import { MasteringApi } from "./mastering_api.ts";
import { ALICE, jobBody, TARGET } from "./testing.ts";

const OPENAPI = new URL("../../../docs/openapi.json", import.meta.url);
const readable =
  (await Deno.permissions.query({ name: "read", path: OPENAPI })).state ===
    "granted";

// deno-lint-ignore no-explicit-any
type Schema = any;

async function contract(): Promise<Schema> {
  return JSON.parse(await Deno.readTextFile(OPENAPI));
}

/** `#/components/schemas/X` → X's schema; anything else as it is. */
function resolve(document: Schema, schema: Schema): Schema {
  if (typeof schema?.$ref !== "string") return schema;
  const name = schema.$ref.replace("#/components/schemas/", "");
  const found = document.components.schemas[name];
  assert.ok(found !== undefined, `${schema.$ref} is not in the document`);
  return resolve(document, found);
}

/** The JSON types a property's schema admits (anyOf and $ref resolved). */
function typesOf(document: Schema, schema: Schema): Set<string> {
  const resolved = resolve(document, schema);
  if (Array.isArray(resolved.anyOf)) {
    return new Set(
      resolved.anyOf.flatMap((part: Schema) => [...typesOf(document, part)]),
    );
  }
  const types = new Set<string>([resolved.type]);
  if (resolved.type === "integer") types.add("number");
  return types;
}

/** The JSON type of a value, as JSON Schema names it. */
function jsonType(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (Number.isInteger(value)) return "integer";
  return typeof value;
}

/** A value of a type the schema does not admit. */
function illTyped(document: Schema, schema: Schema): unknown {
  const admitted = typesOf(document, schema);
  const candidate = [true, 5, "x", [1], { a: 1 }].find((value) =>
    !admitted.has(jsonType(value)) &&
    !(jsonType(value) === "integer" && admitted.has("number"))
  );
  assert.ok(candidate !== undefined, "every JSON type is admitted");
  return candidate;
}

interface Call {
  method: string;
  url: URL;
  headers: Headers;
  body: string | null;
}

/** Every call the client makes, answered with an empty JSON object. */
async function recordedCalls(): Promise<Call[]> {
  const calls: Call[] = [];
  const api = new MasteringApi(
    "https://api.example/",
    "key",
    (input, init) => {
      calls.push({
        method: init?.method ?? "GET",
        url: new URL(String(input)),
        headers: new Headers(init?.headers),
        body: typeof init?.body === "string" ? init.body : null,
      });
      return Promise.resolve(Response.json({}));
    },
  );
  const jobId = crypto.randomUUID();
  await api.createJob(ALICE, { target: TARGET, preset: "balanced" });
  await api.getJob(ALICE, jobId);
  await api.listJobs(ALICE, { status: "queued", limit: "5", cursor: "abc" });
  await api.cancelJob(ALICE, jobId);
  await api.deleteJob(ALICE, jobId);
  await api.listPresets();
  return calls;
}

/** The document's operation for a concrete call: [template, operation]. */
function operationOf(document: Schema, call: Call): [string, Schema] {
  for (const [template, operations] of Object.entries(document.paths)) {
    const pattern = new RegExp(
      `^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`,
    );
    if (!pattern.test(call.url.pathname)) continue;
    const operation = (operations as Schema)[call.method.toLowerCase()];
    if (operation !== undefined) return [template, operation];
  }
  throw new Error(
    `${call.method} ${call.url.pathname} is not an operation of the API`,
  );
}

Deno.test({
  name:
    "openapi: every call of the client is an operation of the API, with declared parameters",
  ignore: !readable,
  async fn() {
    const document = await contract();
    const [scheme] = Object.values(document.components.securitySchemes) as {
      in: string;
      name: string;
    }[];
    const calls = await recordedCalls();
    assert.equal(calls.length, 6);
    const seen = new Map<string, Schema>();
    for (const call of calls) {
      const [template, operation] = operationOf(document, call);
      const name = `${call.method} ${template}`;
      seen.set(name, operation);
      const declared = (operation.parameters ?? []) as {
        name: string;
        in: string;
      }[];
      const declares = (where: string, parameter: string) =>
        declared.some((p) =>
          p.in === where && p.name.toLowerCase() === parameter.toLowerCase()
        );
      // Query parameters: only declared ones
      for (const parameter of call.url.searchParams.keys()) {
        assert.ok(declares("query", parameter), `${name}: ?${parameter}`);
      }
      // The owner header: sent only where the operation takes it
      if (call.headers.has("x-owner-id")) {
        assert.ok(declares("header", "X-Owner-Id"), `${name}: X-Owner-Id`);
      }
      // The key: in the header the security scheme names, on every operation
      // that is not open
      assert.equal(scheme.in, "header");
      assert.equal(call.headers.get(scheme.name), "key", name);
      assert.notDeepEqual(operation.security, [], `${name} is open`);
      // A body only where one is declared, as JSON
      if (call.body !== null) {
        assert.ok(
          operation.requestBody?.content?.["application/json"],
          `${name} takes no JSON body`,
        );
        assert.equal(call.headers.get("content-type"), "application/json");
      }
    }
    // The owner goes on every call about jobs (the presets are everyone's)
    for (
      const call of calls.filter((c) => c.url.pathname.startsWith("/jobs"))
    ) {
      assert.equal(call.headers.get("x-owner-id"), ALICE, call.url.pathname);
    }
    // The answers handler.ts maps are ones the API declares
    const answers = (name: string) =>
      Object.keys(seen.get(name)?.responses ?? {});
    assert.ok(answers("POST /jobs").includes("201"));
    assert.ok(answers("POST /jobs").includes("429"), "too_many_jobs");
    assert.ok(answers("POST /jobs/{job_id}/cancel").includes("409"));
    assert.ok(answers("DELETE /jobs/{job_id}").includes("204"));
    assert.ok(answers("DELETE /jobs/{job_id}").includes("404"));
    const codes: string[] = document.components.schemas.ErrorCode.enum;
    for (const code of ["job_finished", "too_many_jobs", "not_found"]) {
      assert.ok(codes.includes(code), code);
    }
  },
});

Deno.test({
  name: "openapi: the statuses and modes the function knows are the API's",
  ignore: !readable,
  async fn() {
    const { components: { schemas } } = await contract();
    assert.deepEqual([...JOB_STATUSES], schemas.JobStatus.enum);
    assert.deepEqual([...JOB_MODES], schemas.JobMode.enum);
    assert.equal(
      DEFAULT_MODE,
      schemas.CreateJobRequest.properties.mode.default,
    );
  },
});

Deno.test({
  name:
    "openapi: the create check refuses ill-typed fields by name and takes what the API takes",
  ignore: !readable,
  async fn() {
    const document = await contract();
    const request = document.components.schemas.CreateJobRequest;
    const options = document.components.schemas.MasteringOptionsBody;
    // A body the API takes, but for the one field under test. reference and
    // preset exclude each other, so each is tried without the other.
    const base = (field: string): JsonObject =>
      field === "reference" || field === "preset"
        ? { target: TARGET }
        : { target: TARGET, preset: "balanced" };
    const refusal = (body: unknown): string | null => {
      const checked = checkCreateJobBody(body);
      return checked.ok ? null : checked.message;
    };

    for (const [field, schema] of Object.entries(request.properties)) {
      // An ill-typed value is refused, naming the field
      const wrong = illTyped(document, schema);
      const message = refusal({ ...base(field), [field]: wrong });
      assert.ok(message !== null, `${field}: ${JSON.stringify(wrong)} passed`);
      assert.match(message, new RegExp(`\\b${field}\\b`), field);
      // null, where the API takes it, is not refused
      if (typesOf(document, schema).has("null")) {
        const other = field === "preset"
          ? { reference: TARGET }
          : field === "reference"
          ? { preset: "balanced" }
          : {};
        const body = { target: TARGET, ...other, [field]: null };
        assert.equal(refusal(body), null, `${field}: null`);
      }
    }
    for (const field of request.required as string[]) {
      const body: JsonObject = { ...base(field) };
      delete body[field];
      assert.match(refusal(body) ?? "", new RegExp(`\\b${field}\\b`), field);
    }

    for (const [field, schema] of Object.entries(options.properties)) {
      const name = `mastering.${field}`;
      const wrong = illTyped(document, schema);
      const message = refusal({ ...base(name), mastering: { [field]: wrong } });
      assert.ok(message !== null, `${name}: ${JSON.stringify(wrong)} passed`);
      assert.match(message, new RegExp(name.replace(".", "\\.")), name);
      if (typesOf(document, schema).has("null")) {
        assert.equal(
          refusal({ ...base(name), mastering: { [field]: null } }),
          null,
          `${name}: null`,
        );
      }
    }
  },
});

Deno.test({
  name: "openapi: the job fields the table mirrors are always in a job body",
  ignore: !readable,
  async fn() {
    const { components: { schemas } } = await contract();
    const parsed = parseJobSnapshot(jobBody(crypto.randomUUID(), "succeeded"));
    assert.ok(parsed.ok);
    const mirrored = Object.keys(parsed.value);
    const required: string[] = schemas.JobView.required;
    for (const field of mirrored) {
      assert.ok(required.includes(field), `JobView.${field}`);
    }
    // And the test helpers' job body is a whole JobView, nothing more
    assert.deepEqual(
      Object.keys(jobBody(crypto.randomUUID(), "queued")).sort(),
      Object.keys(schemas.JobView.properties).sort(),
    );
    // The list's page, as handler.ts checks it
    assert.deepEqual(
      [...schemas.JobList.required].sort(),
      ["jobs", "next_cursor"],
    );
  },
});
