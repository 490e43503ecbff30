// The page's controller: connection, the job form, upload, polling and the results.

import { ApiError, MasteringApi, uploadPresigned } from "./api.js";
import { describeError } from "./messages.js";
import { AbPlayer } from "./player.js";
import { SpectrumPlot, renderDownloads, renderLoudness } from "./report.js";

const POLL_INTERVAL_MS = 1000;
// Polls that fail in a row (the network, the API) before the page gives up on the job.
const POLL_FAILURES_ALLOWED = 5;
const TERMINAL = new Set(["succeeded", "failed", "expired", "cancelled"]);
const STAGES = {
  awaiting_upload: "Waiting for the upload",
  queued: "Queued",
  downloading: "Fetching the files",
  decoding: "Decoding",
  analyzing: "Analysing",
  matching: "Matching",
  encoding: "Encoding the results",
  uploading: "Storing the results",
  done: "Done",
  failed: "Failed",
  expired: "Expired",
  cancelled: "Cancelled",
};
// The defaults the API applies when a field is left out: the page sends previews and
// mode only when changed, so it also works with a service that predates them.
const DEFAULT_MODE = "master";

const $ = (id) => document.getElementById(id);
// Numbers as people read them: a minus sign, not a hyphen.
const signed = (value) => String(value).replace("-", "−");

const ui = {
  connection: $("connection"),
  apiUrl: $("api-url"),
  apiKey: $("api-key"),
  ownerId: $("owner-id"),
  connectionState: $("connection-state"),
  jobForm: $("job-form"),
  jobFields: $("job-fields"),
  mode: $("mode"),
  target: $("target-file"),
  reference: $("reference-file"),
  sourceReference: $("source-reference"),
  sourcePreset: $("source-preset"),
  referenceField: $("reference-field"),
  presetField: $("preset-field"),
  preset: $("preset"),
  presetDescription: $("preset-description"),
  analyzeSourceHint: $("analyze-source-hint"),
  options: $("options"),
  loudness: $("loudness"),
  loudnessPlatforms: $("loudness-platforms"),
  loudnessCustomField: $("loudness-custom-field"),
  loudnessCustom: $("loudness-custom"),
  ceiling: $("ceiling"),
  intensity: $("intensity"),
  intensityValue: $("intensity-value"),
  limiter: $("limiter"),
  limiterHint: $("limiter-hint"),
  outputs: $("outputs"),
  previews: $("previews"),
  submit: $("submit"),
  cancel: $("cancel"),
  progress: $("progress"),
  progressText: $("progress-text"),
  status: $("status"),
  error: $("error"),
  errorSummary: $("error-summary"),
  errorDetail: $("error-detail"),
  warnings: $("warnings"),
  results: $("results-section"),
  downloadsBlock: $("downloads-block"),
  downloads: $("downloads"),
  ab: $("ab"),
  loudnessTable: $("loudness-table"),
  loudnessCaption: $("loudness-caption"),
};

const player = new AbPlayer(document);
const spectrum = new SpectrumPlot(document);

// Everything the page knows lives here, in memory, for as long as the page is open.
const state = {
  api: null,
  presets: [],
  job: null, // {id, controller: AbortController, timer}
  // What the last job matched: "Reference", or the preset's name.
  referenceName: "Reference",
};

// ------------------------------------------------------------------ messages

function say(text) {
  ui.status.textContent = text;
}

function showError(error) {
  const { summary, detail } = describeError(error);
  showMessage(summary, detail, error.code || "");
}

function showMessage(summary, detail = "", code = "") {
  ui.errorSummary.textContent = summary;
  ui.errorDetail.textContent = detail;
  ui.error.dataset.code = code;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.errorSummary.textContent = "";
  ui.errorDetail.textContent = "";
  delete ui.error.dataset.code;
}

function setProgress(percent, text) {
  ui.progress.value = Math.max(0, Math.min(100, percent));
  ui.progressText.textContent = text;
}

function setJobStatus(status) {
  document.body.dataset.jobStatus = status;
}

// ------------------------------------------------------------------ connection

function defaultApiUrl() {
  return location.protocol === "http:" || location.protocol === "https:" ? location.origin : "";
}

async function connect(event) {
  event.preventDefault();
  clearError();
  let baseUrl;
  try {
    baseUrl = new URL(ui.apiUrl.value.trim());
    if (!["http:", "https:"].includes(baseUrl.protocol)) throw new Error("not http(s)");
  } catch {
    ui.connectionState.textContent = "Not connected.";
    showMessage("Enter the API's address, e.g. https://abc123.execute-api.eu-west-1.amazonaws.com");
    ui.apiUrl.focus();
    return;
  }
  const api = new MasteringApi({
    baseUrl: baseUrl.href,
    apiKey: ui.apiKey.value.trim(),
    ownerId: ui.ownerId.value.trim(),
  });
  ui.connectionState.textContent = "Connecting…";
  try {
    const health = await api.health();
    const catalogue = await api.presets();
    fillPresets(catalogue);
    state.api = api;
    ui.jobFields.disabled = false;
    ui.submit.disabled = false;
    const service = `${health.service ?? "the service"} ${health.version ?? ""}`.trim();
    ui.connectionState.textContent = `Connected to ${service} (${state.presets.length} presets).`;
    say("Connected. Choose your files and start.");
  } catch (error) {
    state.api = null;
    ui.jobFields.disabled = true;
    ui.submit.disabled = true;
    ui.connectionState.textContent = "Not connected.";
    showError(error);
  }
}

function fillPresets(catalogue) {
  state.presets = catalogue.presets || [];
  ui.preset.replaceChildren(
    ...state.presets.map((preset) => new Option(preset.name, preset.id)),
  );
  ui.loudnessPlatforms.replaceChildren(
    ...(catalogue.loudness_targets || []).map(
      (target) => new Option(`${target.name} (${signed(target.loudness_lufs)} LUFS)`, target.id),
    ),
  );
  showPresetDescription();
}

function showPresetDescription() {
  const preset = state.presets.find((entry) => entry.id === ui.preset.value);
  ui.presetDescription.textContent = preset
    ? `${preset.description} ${signed(preset.loudness_lufs)} LUFS, ` +
      `ceiling ${signed(preset.true_peak_dbtp)} dBTP.`
    : "";
}

// ------------------------------------------------------------------ the form

function syncForm() {
  const mode = ui.mode.value;
  const analyze = mode === "analyze";
  const usePreset = ui.sourcePreset.checked;
  ui.referenceField.hidden = usePreset;
  ui.presetField.hidden = !usePreset;
  ui.analyzeSourceHint.hidden = !analyze;
  ui.options.disabled = analyze;
  ui.outputs.disabled = mode !== "master";
  ui.previews.disabled = mode !== "master";
  const matchering = ui.limiter.value === "matchering";
  ui.loudness.disabled = matchering;
  ui.loudnessCustom.disabled = matchering;
  ui.ceiling.disabled = matchering;
  ui.limiterHint.hidden = !matchering;
  ui.loudnessCustomField.hidden = ui.loudness.value !== "custom";
  ui.intensityValue.value = Number(ui.intensity.value).toFixed(2);
}

function declare(file) {
  // Browsers leave the type empty for some audio (.opus, .flac on some systems); the
  // API then goes by the extension.
  return { filename: file.name, size: file.size, content_type: file.type || "application/octet-stream" };
}

class FormProblem extends Error {
  constructor(message, field) {
    super(message);
    this.field = field;
  }
}

/** The POST /jobs body and the files to upload by role, or a FormProblem. */
function buildRequest() {
  const mode = ui.mode.value;
  const target = ui.target.files[0];
  if (!target) throw new FormProblem("Choose your track (the target) first.", ui.target);
  const files = { target };
  const body = { target: declare(target), metadata: { client: "web-page" } };
  const reference = ui.reference.files[0];
  if (ui.sourceReference.checked) {
    if (reference) {
      body.reference = declare(reference);
      files.reference = reference;
    } else if (mode !== "analyze") {
      throw new FormProblem("Choose a reference track, or pick a preset instead.", ui.reference);
    }
  } else if (mode !== "analyze") {
    if (!ui.preset.value) throw new FormProblem("Pick a preset.", ui.preset);
    body.preset = ui.preset.value;
  }
  if (mode === "master") {
    body.outputs = [...ui.outputs.querySelectorAll("input:checked")].map((box) => box.value);
    if (body.outputs.length === 0) {
      throw new FormProblem("Tick at least one file to make.", ui.outputs.querySelector("input"));
    }
    if (ui.previews.checked) body.previews = true;
  }
  if (mode !== DEFAULT_MODE) body.mode = mode;
  if (mode !== "analyze") {
    const mastering = masteringOptions();
    if (Object.keys(mastering).length) body.mastering = mastering;
  }
  return { body, files };
}

// Only what the person changed: the service's defaults depend on reference or preset.
function masteringOptions() {
  const mastering = {};
  if (ui.limiter.value !== "true_peak") {
    mastering.limiter = ui.limiter.value;
  } else {
    if (ui.loudness.value === "custom") {
      const lufs = Number(ui.loudnessCustom.value);
      if (ui.loudnessCustom.value === "" || !(lufs >= -30 && lufs <= -5)) {
        throw new FormProblem("Loudness must be between −30 and −5 LUFS.", ui.loudnessCustom);
      }
      mastering.loudness = lufs;
    } else if (ui.loudness.value) {
      mastering.loudness = ui.loudness.value;
    }
    if (ui.ceiling.value !== "") {
      const ceiling = Number(ui.ceiling.value);
      if (!(ceiling >= -9 && ceiling <= 0)) {
        throw new FormProblem("The ceiling must be between −9 and 0 dBTP.", ui.ceiling);
      }
      mastering.true_peak_dbtp = ceiling;
    }
  }
  const intensity = Number(ui.intensity.value);
  if (intensity !== 1) mastering.intensity = intensity;
  return mastering;
}

// ------------------------------------------------------------------ a job

function resetResults() {
  player.pause();
  spectrum.clear();
  ui.results.hidden = true;
  ui.ab.hidden = true;
  ui.warnings.hidden = true;
  ui.warnings.replaceChildren();
  ui.downloads.replaceChildren();
}

function setBusy(busy) {
  ui.submit.disabled = busy || !state.api;
  ui.cancel.hidden = !busy;
  ui.connection.querySelector("button").disabled = busy;
}

async function start(event) {
  event.preventDefault();
  if (state.job || !state.api) return;
  clearError();
  resetResults();
  let request;
  try {
    request = buildRequest();
  } catch (problem) {
    if (!(problem instanceof FormProblem)) throw problem;
    say("Not started: something is missing in the form.");
    showMessage(problem.message);
    problem.field?.focus();
    return;
  }
  const api = state.api;
  const preset = state.presets.find((entry) => entry.id === request.body.preset);
  state.referenceName = preset ? `Preset: ${preset.name}` : "Reference";
  const job = { id: null, controller: new AbortController(), timer: null };
  state.job = job;
  setBusy(true);
  setJobStatus("creating");
  setProgress(0, "");
  say("Creating the job…");
  try {
    const created = await api.createJob(request.body);
    job.id = created.job_id;
    document.body.dataset.jobId = job.id;
    if (job.controller.signal.aborted) {
      // Cancelled while the job was being created: now it has an id to cancel.
      await cancelOnService(api, job);
      return;
    }
    setJobStatus(created.status);
    await uploadAll(created.uploads, request.files, job.controller.signal);
    say("Uploaded. Waiting for the service…");
    poll(api, job, 0, "");
  } catch (error) {
    if (job.controller.signal.aborted) {
      // cancel() reports on a job with an id; without one there is nothing to cancel.
      if (!job.id) {
        finish(job);
        setJobStatus("cancelled");
        say("Cancelled before the job was created.");
      }
      return;
    }
    finish(job);
    setJobStatus("error");
    say("The job could not start.");
    showError(error);
  }
}

async function uploadAll(forms, files, signal) {
  const roles = Object.keys(files);
  const total = roles.reduce((sum, role) => sum + files[role].size, 0) || 1;
  const sent = Object.fromEntries(roles.map((role) => [role, 0]));
  const show = () => {
    const percent = (100 * Object.values(sent).reduce((a, b) => a + b, 0)) / total;
    setProgress(percent, `Uploading: ${percent.toFixed(0)}%`);
  };
  say(`Uploading ${roles.join(" and ")}…`);
  await Promise.all(
    roles.map((role) =>
      uploadPresigned(forms[role], files[role], (bytes) => {
        sent[role] = bytes;
        show();
      }, signal),
    ),
  );
}

function poll(api, job, failures, lastStage) {
  job.timer = setTimeout(async () => {
    if (state.job !== job || job.controller.signal.aborted) return;
    let answer;
    try {
      answer = await api.job(job.id);
    } catch (error) {
      if (state.job !== job) return;
      if (error.status === 0 && failures + 1 < POLL_FAILURES_ALLOWED) {
        poll(api, job, failures + 1, lastStage);
        return;
      }
      finish(job);
      setJobStatus("error");
      say("Lost track of the job.");
      showError(error);
      return;
    }
    if (state.job !== job || job.controller.signal.aborted) return;
    showJob(answer, lastStage);
    if (TERMINAL.has(answer.status)) {
      finish(job);
      return;
    }
    poll(api, job, 0, answer.progress?.stage ?? lastStage);
  }, POLL_INTERVAL_MS);
}

function finish(job) {
  clearTimeout(job.timer);
  if (state.job === job) state.job = null;
  setBusy(false);
}

function showJob(job, lastStage) {
  const stage = job.progress?.stage ?? job.status;
  const percent = job.progress?.percent ?? 0;
  const stageName = STAGES[stage] ?? stage;
  setProgress(percent, `${stageName}: ${percent}%`);
  setJobStatus(job.status);
  if (job.status === "succeeded") {
    say(`Done. ${resolvedOptions(job)}`.trim());
    showResults(job);
  } else if (TERMINAL.has(job.status)) {
    say(`The job ended: ${job.status}.`);
    const code = job.status === "cancelled" ? "cancelled" : "internal_error";
    const error = job.error ?? { code, message: "" };
    showError(new ApiError(error.code, error.message, 0));
  } else if (stage !== lastStage) {
    // Only stage changes are announced; the bar shows the percentage.
    say(`${stageName}…`);
  }
}

function resolvedOptions(job) {
  const options = job.mastering;
  if (!options || job.status !== "succeeded" || !job.results || !Object.keys(job.results).length) {
    return "";
  }
  const parts = [];
  if (typeof options.loudness_lufs === "number") {
    parts.push(`loudness ${signed(options.loudness_lufs)} LUFS`);
  }
  if (typeof options.true_peak_dbtp === "number") {
    parts.push(`ceiling ${signed(options.true_peak_dbtp)} dBTP`);
  }
  parts.push(`intensity ${options.intensity}`, `limiter ${options.limiter}`);
  return `Mastered with ${parts.join(", ")}.`;
}

function showResults(job) {
  ui.results.hidden = false;
  const results = job.results || {};
  ui.downloadsBlock.hidden = renderDownloads(ui.downloads, results) === 0;
  if (results.preview_target && results.preview_result) {
    player.load(results.preview_target.url, results.preview_result.url);
    ui.ab.hidden = false;
  }
  renderLoudness(ui.loudnessTable, ui.loudnessCaption, job, state.referenceName);
  spectrum.render(job.analysis, state.referenceName);
  const warnings = job.warnings || [];
  ui.warnings.replaceChildren(
    ...warnings.map((warning) => {
      const item = document.createElement("li");
      item.textContent = `Note: ${warning.message}`;
      return item;
    }),
  );
  ui.warnings.hidden = warnings.length === 0;
}

async function cancel() {
  const job = state.job;
  if (!job || job.controller.signal.aborted) return;
  // Stops the uploads; start() cancels on the service a job that has no id yet.
  job.controller.abort();
  clearTimeout(job.timer);
  say("Cancelling…");
  if (job.id) await cancelOnService(state.api, job);
}

async function cancelOnService(api, job) {
  try {
    const answer = await api.cancel(job.id);
    finish(job);
    showJob(answer, "");
  } catch (error) {
    finish(job);
    showError(error);
    if (error.code === "job_finished") {
      // It ended meanwhile: show how.
      try {
        showJob(await api.job(job.id), "");
        return;
      } catch {
        // The message above stands.
      }
    }
    setJobStatus("error");
    say("The job could not be cancelled.");
  }
}

// ------------------------------------------------------------------ wiring

ui.apiUrl.value = defaultApiUrl();
ui.connection.addEventListener("submit", connect);
ui.jobForm.addEventListener("submit", start);
ui.cancel.addEventListener("click", cancel);
for (const control of [ui.mode, ui.sourceReference, ui.sourcePreset, ui.limiter, ui.loudness, ui.intensity]) {
  control.addEventListener("input", syncForm);
  control.addEventListener("change", syncForm);
}
ui.preset.addEventListener("change", showPresetDescription);
ui.submit.disabled = true;
syncForm();
document.body.dataset.ready = "true";
