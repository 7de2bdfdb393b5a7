"""The studio page in headless Chromium against ``serve run`` of the tiny config."""

import base64
import io
from pathlib import Path

import pytest
import trimesh
from PIL import Image

from tests import gltf_validator
from tests.conftest import FIXTURES, ServedGraph
from tests.web.studio import (
    Studio,
    WatchedPage,
    api_error_text,
    mean_difference,
    pixel_stats,
    save_shot,
    still_shot,
    update_docs_screenshot,
)

pytestmark = [pytest.mark.serve, pytest.mark.browser]

CONTRACT_ORDER = ["text_to_image", "background", "image_to_3d", "remesh", "bake", "export"]


def studio(watched: WatchedPage, served: ServedGraph) -> Studio:
    page = Studio(watched.page, served.url)
    page.open()
    return page


def assert_timeline_matches(page: Studio, job: dict) -> None:
    """Queued, then every stage the API timed, in the contract's order, with the API's seconds, then the total."""
    rows = page.timeline()
    stages = [row.stage for row in rows]
    assert stages == ["queued", *job["timings"], "total"]
    assert [s for s in CONTRACT_ORDER if s in job["timings"]] == list(job["timings"])
    for row in rows[1:-1]:
        assert row.state == "done"
        # Shown with two decimals (one from 10 s up).
        assert row.seconds == pytest.approx(job["timings"][row.stage], abs=0.051), row


def test_prompt_to_glb_shows_every_stage_the_images_and_the_model(
    watched: WatchedPage, served: ServedGraph, screenshots: Path
) -> None:
    page = studio(watched, served)
    page.page.fill("#prompt", "a wooden chair")
    page.page.select_option("#format", "glb")
    job = page.generate()

    assert job["status"] == "done"
    assert {"text_to_image", "background", "image_to_3d", "export"} <= set(job["timings"])
    assert "TripoSR" in page.page.inner_text("#service-status")  # the model that makes the assets
    assert_timeline_matches(page, job)
    assert page.image_loaded("#generated-image") and page.image_loaded("#cutout-image")
    page.next_frames()
    viewer = pixel_stats(save_shot(page.page.locator("#mesh-viewer"), screenshots, "glb_viewer"))
    assert viewer.std > 3 and viewer.foreground > 0.01, viewer
    shot = screenshots / "studio.png"
    page.page.screenshot(path=shot)
    update_docs_screenshot(shot)

    facts = page.page.inner_text("#downloads .facts")
    assert f"{job['asset']['faces']:,} faces" in facts
    with page.page.expect_download() as download:
        page.page.click("#downloads a")
    data = Path(download.value.path()).read_bytes()
    assert download.value.suggested_filename == job["asset"]["filename"] == "asset.glb"
    assert len(data) == job["asset"]["bytes"]
    mesh = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh")
    assert len(mesh.faces) == job["asset"]["faces"] > 0
    if gltf_validator.available():
        report = gltf_validator.validate_glb(data)
        assert report.errors == 0, report.messages


def test_surface_modes_change_what_the_viewer_draws(
    watched: WatchedPage, served: ServedGraph, screenshots: Path
) -> None:
    page = studio(watched, served)
    page.page.uncheck("#auto-rotate")  # a still camera, so that only the surface mode changes pixels
    page.page.fill("#prompt", "a stone statue")
    page.generate()
    viewer = page.page.locator("#mesh-viewer")
    shots = {}
    for mode in ("shaded", "flat", "wireframe", "shaded again"):
        page.page.check(f'input[name="display"][value="{mode.split()[0]}"]')
        shots[mode] = still_shot(viewer, screenshots, f"surface_{mode.replace(' ', '_')}")
    assert page.page.get_attribute("#mesh-viewer", "data-surface") == "shaded"
    assert mean_difference(shots["shaded"], shots["shaded again"]) < 0.1
    assert mean_difference(shots["shaded"], shots["flat"]) > 0.3
    assert mean_difference(shots["shaded"], shots["wireframe"]) > 3
    wire, solid = pixel_stats(shots["wireframe"]), pixel_stats(shots["shaded"])
    assert 0 < wire.foreground < solid.foreground, (wire, solid)


def test_image_upload_to_splat_fills_the_splat_viewer(
    watched: WatchedPage, served: ServedGraph, screenshots: Path
) -> None:
    page = studio(watched, served)
    page.start_from_image(FIXTURES / "chair.png")
    page.page.select_option("#format", "splat")
    job = page.generate()

    assert "text_to_image" not in job["timings"] and "image" not in job["files"]
    assert_timeline_matches(page, job)
    assert page.image_loaded("#cutout-image") and not page.image_loaded("#generated-image")
    assert page.page.is_visible("#splat-viewer") and page.page.is_hidden("#mesh-viewer")
    page.next_frames(5)
    splat = pixel_stats(save_shot(page.page.locator("#splat-viewer"), screenshots, "splat_viewer"))
    assert splat.std > 3 and splat.foreground > 0.01, splat
    assert page.page.inner_text("#downloads a") == f"Download {job['asset']['filename']}"


def test_obj_and_ply_results_are_previewed_and_offered_as_the_services_files(
    watched: WatchedPage, served: ServedGraph, screenshots: Path
) -> None:
    page = studio(watched, served)
    page.page.uncheck("#auto-rotate")
    # A textured OBJ comes as a zip (.obj + .mtl + texture); the others as one file.
    cases = (("obj", "uv", "asset.zip"), ("obj", "vertex", "asset.obj"), ("ply", None, "asset.ply"))
    for fmt, texture, filename in cases:
        page.page.select_option("#format", fmt)
        if texture is not None:
            page.page.select_option("#texture", texture)
        page.page.fill("#prompt", f"a {fmt} vase")
        job = page.generate()
        assert job["asset"]["filename"] == filename
        assert page.page.inner_text("#downloads a") == f"Download {filename}"
        assert filename in page.page.inner_text("#viewer-note")
        shown = pixel_stats(still_shot(page.page.locator("#mesh-viewer"), screenshots, f"preview_{filename}"))
        assert shown.std > 3 and shown.foreground > 0.01, (filename, shown)


def one_pixel_png_data_url() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (255, 0, 0)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_blank_prompt_shows_the_apis_message(watched: WatchedPage, served: ServedGraph) -> None:
    watched.watch.allow(r"status of 4\d\d")  # Chromium logs the API's 4xx answer as a console error
    page = studio(watched, served)
    page.page.fill("#prompt", "   ")
    assert page.shown_error() == api_error_text(served.url, {"prompt": "   "})
    assert page.page.get_attribute("#viewer", "data-state") == "empty"


def test_one_pixel_image_shows_the_apis_message(watched: WatchedPage, served: ServedGraph, tmp_path: Path) -> None:
    watched.watch.allow(r"status of 4\d\d")
    page = studio(watched, served)
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (255, 0, 0)).save(path)
    page.start_from_image(path)
    shown = page.shown_error()
    assert shown == api_error_text(served.url, {"image": one_pixel_png_data_url()})
    assert shown.startswith("image: ")


def test_gallery_reopens_a_result_after_a_reload(watched: WatchedPage, served: ServedGraph) -> None:
    page = studio(watched, served)
    page.page.uncheck("#auto-rotate")  # a still viewer keeps the software renderer idle
    page.page.fill("#prompt", "a red teapot")
    job = page.generate()
    page.open()
    page.page.uncheck("#auto-rotate")
    entry = page.page.locator(f'#gallery button[data-id="{job["id"]}"]')
    assert "a red teapot" in entry.inner_text()
    assert page.page.get_attribute("#viewer", "data-state") == "empty"
    entry.click()
    page.wait_for("$('viewer').dataset.state === 'shown'")
    assert page.page.get_attribute("#viewer", "data-job") == job["id"]
    assert page.image_loaded("#cutout-image")
