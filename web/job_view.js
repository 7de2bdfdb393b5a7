// Rendering a job's state: the stage timeline, the images, the downloads and error text.

const STAGE_LABELS = {
  queued: "Queued",
  text_to_image: "Text to image",
  background: "Background removal",
  image_to_3d: "Image to 3D",
  remesh: "Remesh",
  bake: "Texture bake",
  export: "Export",
  total: "Total of the stages",
};
const STATE_WORDS = { done: "done", running: "running", pending: "waiting", failed: "failed", total: "" };

// The contract's stage order; remesh and bake run only for UV-textured meshes.
const STAGE_ORDER = ["text_to_image", "background", "image_to_3d", "remesh", "bake", "export"];

/**
 * The stages a request is expected to pass, in order (the timeline's rows before updates arrive).
 * @param {object} body the POST /jobs body.
 * @param {string|undefined} texture the texture mode the service will use (sent or its default).
 * @returns {string[]}
 */
export function expectedStages(body, texture) {
  const uv = body.format !== "splat" && texture === "uv";
  return STAGE_ORDER.filter((stage) => {
    if (stage === "text_to_image") return body.prompt !== undefined;
    if (stage === "remesh" || stage === "bake") return uv;
    return true;
  });
}

/**
 * The timeline's stages: expected ones and any the service reports, in the contract's order.
 * A finished job keeps only the stages that ran (the service knows best, e.g. PLY has no bake);
 * a stage this page does not know goes last.
 */
function timelineStages(expected, job) {
  const timings = job.timings || {};
  const ran = (stage) => stage in timings || stage === job.stage;
  const known = STAGE_ORDER.filter((stage) => ran(stage) || (job.status !== "done" && expected.includes(stage)));
  const unknown = Object.keys(timings).filter((stage) => !STAGE_ORDER.includes(stage));
  return [...known, ...unknown];
}

/** Seconds for people: two decimals under 10 s, one above. */
export function formatSeconds(seconds) {
  return `${seconds < 10 ? seconds.toFixed(2) : seconds.toFixed(1)} s`;
}

/** Bytes in SI units (kB, MB), as file managers show them. */
export function formatBytes(bytes) {
  if (bytes < 1000) return `${bytes} B`;
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(1)} kB`;
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

function stageState(stage, job, stages) {
  if (job.timings && stage in job.timings) return "done";
  if (job.status === "running" && job.stage === stage) return "running";
  if (job.status === "failed") {
    const firstUnfinished = stages.find((name) => !(name in (job.timings || {})));
    if (stage === firstUnfinished) return "failed";
  }
  return "pending";
}

function timelineRow(name, state, seconds) {
  const row = document.createElement("li");
  row.className = `stage ${state}`;
  row.dataset.stage = name;
  const label = document.createElement("span");
  label.className = "stage-name";
  label.textContent = STAGE_LABELS[name] || name;
  const status = document.createElement("span");
  status.className = "stage-state";
  status.textContent = STATE_WORDS[state];
  const time = document.createElement("span");
  time.className = "stage-seconds";
  time.textContent = seconds === null ? "" : formatSeconds(seconds);
  row.append(label, status, time);
  return row;
}

/**
 * Draw the timeline: queued, then each stage with its state and the service's seconds.
 * @param {HTMLOListElement} list
 * @param {string[]} stages the expected stages (see expectedStages).
 * @param {object} job the latest GET /jobs/{id} state (or a stand-in with status "queued").
 * @param {number|null} queuedSeconds how long the job waited, as measured by this page.
 */
export function renderTimeline(list, stages, job, queuedSeconds) {
  const timings = job.timings || {};
  const all = timelineStages(stages, job);
  const queuedState = job.status === "queued" ? "running" : "done";
  const rows = [timelineRow("queued", queuedState, queuedSeconds)];
  for (const name of all) rows.push(timelineRow(name, stageState(name, job, all), timings[name] ?? null));
  const total = Object.values(timings).reduce((sum, seconds) => sum + seconds, 0);
  if (job.status === "done") rows.push(timelineRow("total", "total", total));
  list.replaceChildren(...rows);
  list.dataset.status = job.status;
}

/**
 * Show an image Blob in an <img>, freeing the previous blob: URL.
 * @param {HTMLImageElement} image
 * @param {Blob|null} blob null hides the image.
 */
export function showImage(image, blob) {
  if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
  if (!blob) {
    image.removeAttribute("src");
    image.hidden = true;
    return;
  }
  image.src = URL.createObjectURL(blob);
  image.hidden = false;
}

/**
 * Offer the asset for download with its size and face count.
 * @param {HTMLElement} container
 * @param {string|null} url a blob: URL of the asset, or null to clear.
 * @param {{bytes: number, faces: number|null, filename: string}|null} asset the job's `asset`.
 */
export function renderDownloads(container, url, asset) {
  container.replaceChildren();
  if (!url || !asset) return;
  const link = document.createElement("a");
  link.className = "button";
  link.href = url;
  link.download = asset.filename;
  link.textContent = `Download ${asset.filename}`;
  const facts = document.createElement("span");
  facts.className = "facts";
  const parts = [formatBytes(asset.bytes)];
  if (asset.faces !== null && asset.faces !== undefined) parts.push(`${asset.faces.toLocaleString("en")} faces`);
  facts.textContent = parts.join(" · ");
  container.append(link, facts);
}

/**
 * Show or clear the form's error line.
 * @param {HTMLElement} line the role=alert paragraph.
 * @param {Error|null} error an ApiError (its message names the field) or any Error.
 */
export function showError(line, error) {
  line.hidden = !error;
  line.textContent = error ? error.message : "";
}
