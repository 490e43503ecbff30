// What each error means to the person at the page, and what they can do about it.
// Keys are the API's error codes (README "Error codes"); the browser test checks that
// every code the service defines has a message here.

export const ERROR_MESSAGES = {
  invalid_request:
    "The service refused the request as invalid. Check the options: the service's message names the field.",
  unauthorized:
    "The API key is missing or wrong. Enter this service's key under Connection and connect again.",
  not_found:
    "The service does not know this job: it was deleted, or it belongs to another owner id.",
  job_finished: "The job had already ended, so there was nothing to cancel.",
  too_many_jobs:
    "This owner id already has as many jobs running as the service allows. Wait for one to end, or cancel one, then try again.",
  unknown_preset:
    "The service has no such preset. Connect again to reload the list, and pick one from it.",
  file_too_large:
    "A file is larger than this service accepts (or larger than the page said it was).",
  unsupported_format:
    "A file is not audio the service takes. Use WAV, AIFF, FLAC, MP3, Ogg (Vorbis or Opus) or M4A/AAC, mono or stereo.",
  invalid_audio:
    "A file could not be read as audio: it is damaged, empty, cut short, or not audio at all.",
  audio_too_short: "A track is too short: it must be at least 1 second long.",
  audio_too_long: "A track is longer than this service allows.",
  silent_audio: "A track is silent (digital silence): there is nothing to master.",
  identical_inputs:
    "The target and the reference are the same audio. Pick a different reference track.",
  upload_missing: "An uploaded file was gone before the job ran. Please submit the job again.",
  upload_expired:
    "The files did not finish uploading in time, so the job expired. Please submit it again.",
  processing_timeout:
    "Mastering took longer than the service allows. Try a shorter track, or try again later.",
  cancelled: "The job was cancelled.",
  internal_error:
    "Something went wrong on the service's side. Please try again; if it keeps happening, tell the service's operator.",
};

// Failures the page itself names, where the API gave no code.
const PAGE_MESSAGES = {
  network:
    "Could not reach the API. Check the API address, that the service is running, and that it allows this page's origin (CORS).",
  timeout: "The API did not answer in time. Check the connection and try again.",
  upload_network:
    "The upload to storage failed before any answer arrived: the storage service is unreachable, or it does not allow uploads from this page's origin (CORS).",
  aborted: "The upload was stopped.",
  s3_EntityTooLarge: "A file is larger than the upload allows.",
  s3_AccessDenied:
    "Storage refused the upload: the upload form has expired or does not match the file. Please submit again.",
  http_404: "The API has no such address. Check the API address under Connection.",
  http_413: "The request is too large for the API.",
  http_429: "The API is busy (too many requests). Wait a moment and try again.",
};

/**
 * The message to show for an error: the human one, and the server's own words.
 * @param {{code: string, serverMessage?: string, status?: number}} error
 * @returns {{summary: string, detail: string}}
 */
export function describeError(error) {
  const code = error.code || "internal_error";
  let summary = ERROR_MESSAGES[code] ?? PAGE_MESSAGES[code];
  if (!summary && code.startsWith("s3_")) {
    summary = "Storage refused the upload.";
  } else if (!summary && (error.status ?? 0) >= 500) {
    summary = "The service failed to answer. Please try again later.";
  } else if (!summary) {
    summary = `The request failed (${code}).`;
  }
  const said = (error.serverMessage || "").trim();
  const detail = said && said !== summary ? `The service said: ${said} (${code})` : `(${code})`;
  return { summary, detail };
}
