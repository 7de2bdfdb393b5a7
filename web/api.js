// The gen3d HTTP API as the page uses it: the API key, JSON errors in plain words, jobs and files.

const KEY_STORAGE = "gen3d.apiKey";
const POLL_MS = 400;
const FINISHED = new Set(["done", "failed"]);

/** An API answer that was not a success, in words a person can act on. */
export class ApiError extends Error {
  /**
   * @param {string} message what went wrong, for people.
   * @param {{status?: number, field?: string|null, retryAfter?: number|null}} details
   */
  constructor(message, { status = 0, field = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.field = field;
    this.retryAfter = retryAfter;
  }
}

export function storedApiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function storeApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

function headers(extra = {}) {
  const key = storedApiKey();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

/**
 * Turn a failed response into an ApiError with the service's own `error` text and `field`.
 * @param {Response} response a response whose status is not 2xx.
 * @returns {Promise<ApiError>}
 */
async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not our JSON error shape (e.g. a proxy's HTML page): fall back to the status line.
  }
  const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  const retryAfter = Number.isFinite(retry) ? retry : null;
  const field = body && typeof body.field === "string" ? body.field : null;
  let message = body && typeof body.error === "string" ? body.error : `${response.status} ${response.statusText}`;
  if (field) message = `${field}: ${message}`;
  if (response.status === 401) message = `The service needs a valid API key (${message}).`;
  else if (response.status === 503 && retryAfter !== null) message = `${message} (try again in ${retryAfter} s)`;
  return new ApiError(message, { status: response.status, field, retryAfter });
}

/**
 * fetch() with the API key, throwing ApiError for network failures and non-2xx answers.
 * @param {string} url
 * @param {RequestInit} init
 * @returns {Promise<Response>}
 */
async function call(url, init = {}) {
  let response;
  try {
    response = await fetch(url, { ...init, headers: headers(init.headers) });
  } catch (error) {
    throw new ApiError(`Could not reach the service (${error.message}).`);
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

/** GET /version: limits, formats and mesh options; a 401 means the page must ask for a key. */
export async function fetchVersion() {
  return (await call("/version")).json();
}

/** GET /health: true when ready, false while warming up (503). */
export async function isHealthy() {
  try {
    return (await fetch("/health")).ok;
  } catch {
    return false;
  }
}

/**
 * POST /jobs.
 * @param {object} body the JSON request (prompt or image, seed, format, options).
 * @returns {Promise<{id: string, status_url: string}>}
 */
export async function submitJob(body) {
  const response = await call("/jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.json();
}

/** GET /jobs/{id}: the job's current state. */
export async function fetchJob(id) {
  return (await call(`/jobs/${encodeURIComponent(id)}`)).json();
}

/** A job file (image, cut-out or asset) as a Blob; fetched with the key, which <img> cannot send. */
export async function fetchFile(url) {
  return (await call(url)).blob();
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
}

async function pollJob(id, onUpdate, signal) {
  for (;;) {
    const job = await fetchJob(id);
    onUpdate(job);
    if (FINISHED.has(job.status)) return job;
    await sleep(POLL_MS, signal);
  }
}

/**
 * Server-sent events from /jobs/{id}/events; resolves with the finished job, or null when the
 * stream broke before the end (the caller then polls).
 */
function streamJob(id, onUpdate, signal) {
  return new Promise((resolve) => {
    const source = new EventSource(`/jobs/${encodeURIComponent(id)}/events`);
    const finish = (job) => {
      source.close();
      resolve(job);
    };
    signal?.addEventListener("abort", () => finish(null));
    source.onmessage = (event) => {
      const job = JSON.parse(event.data);
      onUpdate(job);
      if (FINISHED.has(job.status)) finish(job);
    };
    source.onerror = () => finish(null);
  });
}

/**
 * Follow a job until it is done or failed, calling onUpdate with every state seen.
 *
 * EventSource cannot send the X-API-Key header, so with a key (or when the stream breaks) the
 * page polls GET /jobs/{id} instead.
 * @param {string} id
 * @param {(job: object) => void} onUpdate
 * @param {AbortSignal} [signal] aborts the follow (a newer job replaced this one).
 * @returns {Promise<object>} the finished job.
 */
export async function followJob(id, onUpdate, signal) {
  if (!storedApiKey()) {
    const job = await streamJob(id, onUpdate, signal);
    if (job) return job;
    signal?.throwIfAborted();
  }
  return pollJob(id, onUpdate, signal);
}
