// The GLB orbit viewer: <model-viewer>, with shaded, flat and wireframe surfaces.

import "@google/model-viewer";

const MODES = new Set(["shaded", "flat", "wireframe"]);

/**
 * model-viewer's three.js scene. Its public scene-graph API edits PBR factors, textures and
 * variants but has no wireframe or flat shading, so the surface modes reach the scene through
 * the element's `scene` symbol (an internal of the pinned 4.4.0; a browser test guards it).
 * @param {HTMLElement} viewer the <model-viewer> element.
 */
function sceneOf(viewer) {
  const symbol = Object.getOwnPropertySymbols(viewer).find((s) => s.description === "scene");
  if (!symbol) throw new Error("model-viewer no longer exposes its scene; the surface modes need updating");
  return viewer[symbol];
}

/**
 * Show the loaded model shaded (smooth vertex normals), flat (one normal per face) or as a wireframe.
 * @param {HTMLElement} viewer the <model-viewer> element, with a model loaded.
 * @param {"shaded"|"flat"|"wireframe"} mode
 */
export function setSurfaceMode(viewer, mode) {
  if (!MODES.has(mode)) throw new Error(`unknown surface mode ${mode}`);
  const scene = sceneOf(viewer);
  for (const model of scene.models) {
    model.traverse((object) => {
      if (!object.isMesh) return;
      // A file without normals loads flat-shaded; smooth normals make "shaded" differ from "flat".
      if (mode === "shaded" && !object.geometry.hasAttribute("normal")) object.geometry.computeVertexNormals();
      for (const material of [object.material].flat()) {
        material.wireframe = mode === "wireframe";
        material.flatShading = mode === "flat";
        // flatShading changes the shader program, which three only rebuilds when told.
        material.needsUpdate = true;
      }
    });
  }
  scene.queueRender();
  viewer.dataset.surface = mode;
}

/**
 * Load a GLB into model-viewer and resolve once it is on screen.
 * @param {HTMLElement} viewer the <model-viewer> element.
 * @param {string} url a blob: URL of the GLB.
 * @param {string} mode the surface mode to apply once loaded.
 */
export function showMesh(viewer, url, mode) {
  return new Promise((resolve, reject) => {
    const loaded = () => {
      viewer.removeEventListener("error", failed);
      try {
        setSurfaceMode(viewer, mode);
        resolve();
      } catch (error) {
        reject(error);
      }
    };
    const failed = (event) => {
      viewer.removeEventListener("load", loaded);
      reject(new Error(`the viewer could not load the model (${event.detail?.type || "error"})`));
    };
    viewer.addEventListener("load", loaded, { once: true });
    viewer.addEventListener("error", failed, { once: true });
    viewer.src = url;
  });
}
