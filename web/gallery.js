// This browser's past results, kept small in localStorage; the files stay on the service.

const STORAGE = "gen3d.gallery";
const MAX_ENTRIES = 24;
const THUMBNAIL_PX = 96;

/**
 * @typedef {object} GalleryEntry
 * @property {string} id the job id (its files are fetched from /jobs/{id} while the service keeps them).
 * @property {string} label the prompt, or "image: <file name>".
 * @property {string} format glb, obj, ply or splat.
 * @property {string} [up] the splat up axis.
 * @property {number|string} seed
 * @property {Object<string, number>} timings the service's seconds per stage.
 * @property {string} created ISO time.
 * @property {string} [thumbnail] a data: URL of the cut-out, 96 px on its long side.
 * @property {boolean} [expired] the service no longer has the job.
 */

/** @returns {GalleryEntry[]} newest first; an unreadable store counts as empty. */
export function loadGallery() {
  try {
    const entries = JSON.parse(localStorage.getItem(STORAGE) || "[]");
    return Array.isArray(entries) ? entries : [];
  } catch {
    return [];
  }
}

function store(entries) {
  // A full store drops the oldest entries until the list fits.
  for (let kept = entries.length; kept > 0; kept -= 1) {
    try {
      localStorage.setItem(STORAGE, JSON.stringify(entries.slice(0, kept)));
      return;
    } catch (error) {
      if (error.name !== "QuotaExceededError") throw error;
    }
  }
}

/** Add or replace an entry (by id) at the top of the list. */
export function saveEntry(entry) {
  store([entry, ...loadGallery().filter((old) => old.id !== entry.id)].slice(0, MAX_ENTRIES));
}

/** Flag an entry whose job the service has forgotten. */
export function markExpired(id) {
  store(loadGallery().map((entry) => (entry.id === id ? { ...entry, expired: true } : entry)));
}

export function clearGallery() {
  localStorage.removeItem(STORAGE);
}

/**
 * A small WebP thumbnail of an image, cheap enough for localStorage (a few kB).
 * @param {Blob} blob a PNG.
 * @returns {Promise<string>} a data: URL.
 */
export async function thumbnailOf(blob) {
  const bitmap = await createImageBitmap(blob);
  const scale = THUMBNAIL_PX / Math.max(bitmap.width, bitmap.height);
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  return canvas.toDataURL("image/webp", 0.8);
}

function entryButton(entry, onOpen) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "gallery-entry";
  button.dataset.id = entry.id;
  const total = Object.values(entry.timings || {}).reduce((sum, seconds) => sum + seconds, 0);
  const when = new Date(entry.created).toLocaleString();
  const thumb = document.createElement("img");
  thumb.alt = "";
  if (entry.thumbnail) thumb.src = entry.thumbnail;
  const text = document.createElement("span");
  text.className = "gallery-text";
  const title = document.createElement("strong");
  title.textContent = entry.label || "(empty prompt)";
  const details = document.createElement("span");
  details.textContent = `${entry.format} · seed ${entry.seed} · ${total.toFixed(2)} s · ${when}`;
  text.append(title, details);
  if (entry.expired) {
    const gone = document.createElement("span");
    gone.className = "expired";
    gone.textContent = "no longer on the service";
    text.append(gone);
  }
  button.append(thumb, text);
  button.addEventListener("click", () => onOpen(entry));
  return button;
}

/**
 * Draw the gallery list.
 * @param {HTMLUListElement} list
 * @param {(entry: GalleryEntry) => void} onOpen called when a person picks an entry.
 */
export function renderGallery(list, onOpen) {
  const entries = loadGallery();
  list.replaceChildren(
    ...entries.map((entry) => {
      const item = document.createElement("li");
      item.append(entryButton(entry, onOpen));
      return item;
    }),
  );
  list.dataset.count = String(entries.length);
  document.getElementById("gallery-empty").hidden = entries.length > 0;
  document.getElementById("clear-gallery").hidden = entries.length === 0;
}
