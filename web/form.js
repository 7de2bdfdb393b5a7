// The request form: filled from GET /version, turned into the JSON body of POST /jobs.

const FORMAT_LABELS = {
  glb: "GLB mesh",
  obj: "OBJ mesh",
  ply: "PLY mesh",
  splat: "Gaussian splat (PLY)",
};
const MESH_OPTIONS = ["faces", "texture", "texture_size", "resolution", "normalize"];
const TEXTURE_LABELS = { vertex: "Per vertex", uv: "UV texture" };
let meshDefaults = {}; // the service's default for each mesh option it offers
let chosenImage = null; // {dataUrl, name} of the image to send

const $ = (id) => document.getElementById(id);

function fillSelect(select, values, labels = {}, selected = undefined) {
  select.replaceChildren(
    ...values.map((value) => new Option(labels[value] ?? String(value), String(value), false, value === selected)),
  );
}

function setNumberRange(input, { min, max, default: value }) {
  input.min = String(min);
  input.max = String(max);
  input.value = String(value);
}

/**
 * Offer what the service accepts: formats, text-to-image sizes and steps, and the mesh options
 * it announces (a service without mesh options hides that fieldset and never sends them).
 * @param {object} version the GET /version answer.
 */
export function configureForm(version) {
  fillSelect($("format"), version.formats, FORMAT_LABELS, version.formats[0]);
  const sizeLabels = Object.fromEntries(version.allowed_sizes.map((size) => [size, `${size} × ${size}`]));
  fillSelect($("size"), ["", ...version.allowed_sizes], { "": "default", ...sizeLabels }, "");
  fillSelect($("steps"), ["", ...version.allowed_steps], { "": "default" }, "");
  const options = version.mesh_options || {};
  for (const name of MESH_OPTIONS) {
    document.querySelector(`[data-option="${name}"]`).hidden = !(name in options);
  }
  if (options.faces) setNumberRange($("faces"), options.faces);
  if (options.resolution) setNumberRange($("resolution"), options.resolution);
  if (options.texture) fillSelect($("texture"), options.texture.choices, TEXTURE_LABELS, options.texture.default);
  const sizes = options.texture_size;
  if (sizes) fillSelect($("texture_size"), sizes.choices, {}, sizes.default);
  if (options.normalize) $("normalize").checked = Boolean(options.normalize.default);
  meshDefaults = Object.fromEntries(Object.entries(options).map(([name, option]) => [name, option.default]));
  updateVisibility();
}

function source() {
  return document.querySelector('input[name="source"]:checked').value;
}

/** Show only the controls that apply to the chosen source, format and texture. */
export function updateVisibility() {
  const fromPrompt = source() === "prompt";
  const isSplat = $("format").value === "splat";
  $("prompt-group").hidden = !fromPrompt;
  $("image-group").hidden = fromPrompt;
  $("image-options").hidden = !fromPrompt;
  $("splat-options").hidden = !isSplat;
  $("mesh-options").hidden = isSplat || Object.keys(meshDefaults).length === 0;
  // A texture size only means something for a UV texture.
  $("texture_size").disabled = $("texture").value !== "uv";
}

/** Read the chosen image as a data: URL (the API accepts one as `image`). */
function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function useImage(file) {
  chosenImage = { dataUrl: await readAsDataUrl(file), name: file.name };
  $("image-preview").src = chosenImage.dataUrl;
  $("image-preview").hidden = false;
  $("dropzone-text").textContent = `${file.name} — drop or choose another image to replace it`;
  document.querySelector('input[name="source"][value="image"]').checked = true;
  updateVisibility();
}

function wireDropzone() {
  const zone = $("dropzone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (file) useImage(file);
  });
  $("image-file").addEventListener("change", () => {
    const file = $("image-file").files[0];
    if (file) useImage(file);
  });
}

/** Wire the form's own behaviour (visibility, image choice); submitting is the caller's job. */
export function wireForm() {
  for (const id of ["format", "texture"]) $(id).addEventListener("change", updateVisibility);
  for (const radio of document.querySelectorAll('input[name="source"]')) {
    radio.addEventListener("change", updateVisibility);
  }
  wireDropzone();
}

function nextSeed() {
  if (!$("randomise-seed").checked) {
    const text = $("seed").value;
    // Anything but a whole number goes as typed, so that the service's message names the problem.
    return /^\d+$/.test(text) ? Number(text) : text;
  }
  const seed = crypto.getRandomValues(new Uint32Array(1))[0];
  $("seed").value = String(seed);
  return seed;
}

/**
 * The mesh options a person changed from the service's defaults. Untouched ones are not sent, so
 * the service applies its own defaults (e.g. vertex colours for PLY, which has no UV texture).
 */
function meshOptions() {
  const values = {
    faces: Number($("faces").value),
    texture: $("texture").value,
    texture_size: Number($("texture_size").value),
    resolution: Number($("resolution").value),
    normalize: $("normalize").checked,
  };
  if (values.texture !== "uv") delete values.texture_size;
  return Object.fromEntries(
    Object.entries(values).filter(([name, value]) => name in meshDefaults && value !== meshDefaults[name]),
  );
}

/** The texture mode the service will use for a body: the one sent, or its default. */
export function textureFor(body) {
  return body.texture ?? meshDefaults.texture;
}

/**
 * The POST /jobs body for the form as it stands. Field values are checked by the service, not
 * here, so its messages (naming the field) are the ones people see.
 * @returns {{body: object, label: string}} the body and a short label for the gallery.
 */
export function requestBody() {
  const format = $("format").value;
  const body = { seed: nextSeed(), format };
  let label;
  if (source() === "prompt") {
    body.prompt = $("prompt").value;
    label = body.prompt.trim();
    if ($("size").value) body.width = body.height = Number($("size").value);
    if ($("steps").value) body.steps = Number($("steps").value);
  } else {
    // No image goes as "", so that the service's message names the missing field.
    body.image = chosenImage?.dataUrl ?? "";
    label = `image: ${chosenImage?.name ?? "none"}`;
  }
  if (format === "splat") body.up = $("up").value;
  else Object.assign(body, meshOptions());
  return { body, label };
}
