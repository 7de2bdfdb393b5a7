// OBJ, PLY and zipped textured-OBJ results turned into a GLB, so that the one mesh viewer shows
// every mesh format. The download stays the service's own file; only the preview is converted.

import * as THREE from "three";
import { GLTFExporter } from "three/addons/exporters/GLTFExporter.js";
import { unzipSync } from "three/addons/libs/fflate.module.js";
import { MTLLoader } from "three/addons/loaders/MTLLoader.js";
import { OBJLoader } from "three/addons/loaders/OBJLoader.js";
import { PLYLoader } from "three/addons/loaders/PLYLoader.js";

function plyMesh(buffer) {
  const geometry = new PLYLoader().parse(buffer);
  const material = new THREE.MeshStandardMaterial({ vertexColors: geometry.hasAttribute("color") });
  return new THREE.Mesh(geometry, material);
}

/**
 * A textured OBJ from the service's zip (.obj, .mtl and the texture image), textures loaded.
 * @param {ArrayBuffer} buffer the zip file.
 * @returns {Promise<THREE.Object3D>}
 */
async function zippedObj(buffer) {
  const files = unzipSync(new Uint8Array(buffer));
  const named = (suffix) => {
    const name = Object.keys(files).find((key) => key.toLowerCase().endsWith(suffix));
    if (!name) throw new Error(`the zip holds no ${suffix} file`);
    return new TextDecoder().decode(files[name]);
  };
  const urls = new Map(Object.entries(files).map(([name, bytes]) => [name, URL.createObjectURL(new Blob([bytes]))]));
  const manager = new THREE.LoadingManager();
  // The .mtl names its texture by file name: serve it from the zip, never from the network.
  manager.setURLModifier((url) => urls.get(url.split("/").pop()) ?? "data:,");
  const texturesLoaded = new Promise((resolve, reject) => {
    manager.onLoad = resolve;
    manager.onError = (url) => reject(new Error(`the zip's texture ${url} did not load`));
  });
  const materials = new MTLLoader(manager).parse(named(".mtl"), "");
  materials.preload();
  const object = new OBJLoader().setMaterials(materials).parse(named(".obj"));
  // onLoad only fires once something was loaded: a material without a texture loads nothing.
  if (Object.values(materials.materialsInfo).some((info) => info.map_kd)) await texturesLoaded;
  for (const url of urls.values()) URL.revokeObjectURL(url);
  return object;
}

/**
 * Convert a mesh file to GLB.
 * @param {Blob} blob the asset file.
 * @param {string} filename its name (asset.obj, asset.ply or asset.zip), which names its format.
 * @returns {Promise<Blob>} a GLB.
 */
export async function meshFileToGlb(blob, filename) {
  const extension = filename.split(".").pop().toLowerCase();
  let object;
  if (extension === "ply") object = plyMesh(await blob.arrayBuffer());
  else if (extension === "obj") object = new OBJLoader().parse(await blob.text());
  else if (extension === "zip") object = await zippedObj(await blob.arrayBuffer());
  else throw new Error(`no preview for .${extension} files`);
  const glb = await new GLTFExporter().parseAsync(object, { binary: true });
  return new Blob([glb], { type: "model/gltf-binary" });
}
