// The splat orbit viewer: Spark on three.js. Loaded on first use (Spark is 2.7 MB and sets up
// WebGL programs and a worker), so pages that never show a splat never pay for it.

import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { SparkRenderer, SplatMesh } from "@sparkjsdev/spark";

/** A three.js scene with Spark's renderer, orbit controls and a render loop while visible. */
export class SplatViewer {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: false });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(0xf1f3f5);
    this.camera = new THREE.PerspectiveCamera(45, 1, 0.01, 100);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.enableDamping = true;
    this.controls.autoRotate = true;
    this.scene.add(new SparkRenderer({ renderer: this.renderer }));
    this.splat = null;
    new ResizeObserver(() => this.resize()).observe(canvas);
  }

  resize() {
    const { clientWidth: width, clientHeight: height } = this.canvas;
    if (!width || !height) return;
    this.renderer.setSize(width, height, false);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
  }

  set autoRotate(on) {
    this.controls.autoRotate = on;
  }

  /**
   * Show a splat PLY, upright whichever up axis it was written with, framed by the camera.
   * @param {ArrayBuffer} bytes the splat PLY file.
   * @param {"+y"|"-y"} up the up axis the file was written with.
   */
  async show(bytes, up) {
    this.clear();
    const splat = new SplatMesh({ fileBytes: bytes, fileName: "asset.ply" });
    await splat.initialized;
    // three.js is +y up: a -y file turns 180° about x to stand upright.
    if (up === "-y") splat.rotation.x = Math.PI;
    this.scene.add(splat);
    this.splat = splat;
    splat.updateMatrixWorld();
    this.frame(splat.getBoundingBox(true).applyMatrix4(splat.matrixWorld));
    this.resize();
    this.renderer.setAnimationLoop(() => {
      this.controls.update();
      this.renderer.render(this.scene, this.camera);
    });
  }

  /** Point the camera at a world-space box from a distance that fits it in view. */
  frame(box) {
    const centre = box.getCenter(new THREE.Vector3());
    const radius = box.getSize(new THREE.Vector3()).length() / 2 || 1;
    const distance = radius / Math.sin(THREE.MathUtils.degToRad(this.camera.fov / 2));
    this.controls.target.copy(centre);
    this.camera.position.copy(centre).add(new THREE.Vector3(0, radius * 0.3, distance));
    this.camera.near = distance / 100;
    this.camera.far = distance * 10;
    this.camera.updateProjectionMatrix();
    this.controls.update();
  }

  /** Stop rendering and free the current splat. */
  clear() {
    this.renderer.setAnimationLoop(null);
    if (this.splat) {
      this.scene.remove(this.splat);
      this.splat.dispose();
      this.splat = null;
    }
  }
}
