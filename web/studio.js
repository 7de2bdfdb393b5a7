// The studio page: submit a job, follow its stages, show the images and the 3D result.

import {
  ApiError,
  fetchFile,
  fetchJob,
  fetchVersion,
  followJob,
  isHealthy,
  storeApiKey,
  storedApiKey,
  submitJob,
} from "./api.js";
import { configureForm, requestBody, textureFor, updateVisibility, wireForm } from "./form.js";
import { clearGallery, markExpired, renderGallery, saveEntry, thumbnailOf } from "./gallery.js";
import { expectedStages, renderDownloads, renderTimeline, showError, showImage } from "./job_view.js";
import { setSurfaceMode, showMesh } from "./mesh_viewer.js";

const HEALTH_RETRY_MS = 2000;
const $ = (id) => document.getElementById(id);

const meshViewer = $("mesh-viewer");
let splatViewer = null; // created on the first splat result
let following = null; // AbortController of the job on screen
const objectUrls = []; // blob: URLs of the result on screen

async function splats() {
  if (!splatViewer) {
    const { SplatViewer } = await import("./splat_viewer.js");
    splatViewer = new SplatViewer($("splat-viewer"));
    splatViewer.autoRotate = $("auto-rotate").checked;
  }
  return splatViewer;
}

function surfaceMode() {
  return document.querySelector('input[name="display"]:checked').value;
}

function clearResult() {
  following?.abort();
  following = null;
  splatViewer?.clear();
  meshViewer.removeAttribute("src");
  for (const id of ["mesh-viewer", "splat-viewer", "viewer-note"]) $(id).hidden = true;
  $("viewer-empty").hidden = false;
  $("display-mode").disabled = true;
  $("viewer").dataset.state = "empty";
  for (const id of ["generated-image", "cutout-image"]) showImage($(id), null);
  for (const url of objectUrls.splice(0)) URL.revokeObjectURL(url);
  renderDownloads($("downloads"), null, null);
  $("timeline").replaceChildren();
}

/**
 * Fetch and show the image and the cut-out the first time the job lists each.
 * @param {object} job the job's latest state.
 * @param {Map<string, Promise<Blob>>} fetched file key -> its fetch, filled here.
 */
function showNewImages(job, fetched) {
  for (const [key, id] of [["image", "generated-image"], ["cutout", "cutout-image"]]) {
    const url = job.files?.[key];
    if (!url || fetched.has(key)) continue;
    const blob = fetchFile(url);
    fetched.set(key, blob);
    blob.then((data) => showImage($(id), data), (error) => showError($("request-error"), error));
  }
}

/** A blob: URL that clearResult() frees. */
function keepUrl(blob) {
  const url = URL.createObjectURL(blob);
  objectUrls.push(url);
  return url;
}

/** Put a finished job's asset in the right viewer and offer it for download. */
async function showAsset(context, job) {
  const blob = await fetchFile(job.files.asset);
  renderDownloads($("downloads"), keepUrl(blob), job.asset);
  $("viewer-empty").hidden = true;
  if (context.format === "splat") {
    $("splat-viewer").hidden = false;
    await (await splats()).show(await blob.arrayBuffer(), context.up);
  } else {
    let glb = blob;
    if (context.format !== "glb") {
      const { meshFileToGlb } = await import("./mesh_files.js");
      glb = await meshFileToGlb(blob, job.asset.filename);
      $("viewer-note").hidden = false;
      const note = `Preview converted to GLB in this browser; the download is the service's ${job.asset.filename}.`;
      $("viewer-note").textContent = note;
    }
    meshViewer.hidden = false;
    await showMesh(meshViewer, keepUrl(glb), surfaceMode());
    $("display-mode").disabled = false;
  }
  $("viewer").dataset.state = "shown";
}

function jobFailure(job) {
  const error = job.error || { error: "the job failed without a message", field: null };
  return new ApiError(error.field ? `${error.field}: ${error.error}` : error.error, { field: error.field });
}

/**
 * Follow a job to its end, drawing every update, then show and remember its result.
 * @param {{id: string, label: string, format: string, up?: string, seed: number|string, created: string,
 *          stages: string[]}} context the job and what the page asked for (a GalleryEntry plus stages).
 */
async function runJob(context) {
  following?.abort();
  following = new AbortController();
  $("viewer").dataset.job = context.id;
  const started = performance.now();
  let queuedSeconds = null;
  const fetched = new Map();
  const draw = (job) => {
    if (job.status !== "queued" && queuedSeconds === null) queuedSeconds = (performance.now() - started) / 1000;
    renderTimeline($("timeline"), context.stages, job, queuedSeconds);
    showNewImages(job, fetched);
  };
  draw({ status: "queued", timings: {} });
  const job = await followJob(context.id, draw, following.signal);
  if (job.status === "failed") throw jobFailure(job);
  await showAsset(context, job);
  const cutout = fetched.has("cutout") ? await thumbnailOf(await fetched.get("cutout")) : undefined;
  const { stages, ...entry } = context;
  saveEntry({ ...entry, timings: job.timings, thumbnail: cutout });
  renderGallery($("gallery"), openEntry);
}

async function generate(event) {
  event.preventDefault();
  const button = $("generate");
  const { body, label } = requestBody();
  clearResult();
  showError($("request-error"), null);
  button.disabled = true;
  button.textContent = "Generating…";
  try {
    const { id } = await submitJob(body);
    const created = new Date().toISOString();
    const stages = expectedStages(body, textureFor(body));
    await runJob({ id, label, format: body.format, up: body.up, seed: body.seed, created, stages });
  } catch (error) {
    if (error.name !== "AbortError") showError($("request-error"), error);
  } finally {
    button.disabled = false;
    button.textContent = "Generate";
  }
}

/** Re-open a gallery entry from the service, or say that the service no longer has it. */
async function openEntry(entry) {
  clearResult();
  showError($("request-error"), null);
  try {
    await fetchJob(entry.id);
    const stages = Object.keys(entry.timings || {});
    await runJob({ ...entry, stages });
  } catch (error) {
    if (error.status === 404) {
      markExpired(entry.id);
      renderGallery($("gallery"), openEntry);
      showError($("request-error"), new Error("That result is no longer on the service; only recent jobs are kept."));
    } else if (error.name !== "AbortError") {
      showError($("request-error"), error);
    }
  }
}

const MODEL_LABELS = { triposr: "TripoSR", trellis: "TRELLIS-image-large" };

async function waitUntilHealthy(version) {
  const model = MODEL_LABELS[version.model] ?? version.model;
  const describe = `gen3d ${version.version} · ${model} · ${version.mode} mode`;
  const note = version.mode === "real" ? "" : " (random weights: shapes are noise, not real assets)";
  while (!(await isHealthy())) {
    $("service-status").textContent = `${describe}: warming up…`;
    await new Promise((resolve) => setTimeout(resolve, HEALTH_RETRY_MS));
  }
  $("service-status").textContent = `${describe}${note}`;
}

/** Ask /version what the service offers; a 401 shows the API-key field. */
async function connect() {
  $("generate").disabled = true;
  try {
    const version = await fetchVersion();
    $("api-key-form").hidden = !storedApiKey();
    configureForm(version);
    $("generate").disabled = false;
    await waitUntilHealthy(version);
  } catch (error) {
    if (error.status === 401) {
      $("api-key-form").hidden = false;
      $("service-status").textContent = storedApiKey()
        ? "The service refused this API key; enter the right one."
        : "This service needs an API key.";
      $("api-key").focus();
    } else {
      $("service-status").textContent = error.message;
    }
  }
}

function wirePage() {
  wireForm();
  $("request-form").addEventListener("submit", generate);
  $("api-key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    storeApiKey($("api-key").value.trim());
    connect();
  });
  for (const radio of document.querySelectorAll('input[name="display"]')) {
    radio.addEventListener("change", () => setSurfaceMode(meshViewer, surfaceMode()));
  }
  $("auto-rotate").addEventListener("change", () => {
    meshViewer.autoRotate = $("auto-rotate").checked;
    if (splatViewer) splatViewer.autoRotate = $("auto-rotate").checked;
  });
  $("clear-gallery").addEventListener("click", () => {
    clearGallery();
    renderGallery($("gallery"), openEntry);
  });
  renderGallery($("gallery"), openEntry);
  updateVisibility();
}

wirePage();
connect();
