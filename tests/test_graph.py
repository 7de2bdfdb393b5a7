"""End to end through ``serve run configs/serve_tiny.yaml`` over HTTP (tiny random weights, CPU)."""

import base64
import io
import zipfile
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pygltflib
import pytest
import trimesh

from gen3d.service.api import parse_server_timing
from gen3d.splat.ply import read_splat_ply
from gen3d.splat.validate import validate_splat
from tests.conftest import FIXTURES, ServedGraph
from tests.gltf_validator import validate_glb

pytestmark = pytest.mark.serve
TIMEOUT = 300
STAGES = ["text_to_image", "background", "image_to_3d", "export"]
UV_STAGES = ["text_to_image", "background", "image_to_3d", "remesh", "bake", "export"]


def post_json(served: ServedGraph, body: dict) -> httpx.Response:
    return httpx.post(f"{served.url}/generate", json=body, timeout=TIMEOUT)


def image_b64(name: str) -> str:
    return base64.b64encode((FIXTURES / name).read_bytes()).decode("ascii")


def load_mesh(data: bytes, file_type: str) -> trimesh.Trimesh:
    loaded = trimesh.load(io.BytesIO(data), file_type=file_type, process=False)
    return loaded.to_geometry() if isinstance(loaded, trimesh.Scene) else loaded


def assert_valid_splat(data: bytes) -> None:
    gaussians = read_splat_ply(data)
    assert len(gaussians) >= 7000
    report = validate_splat(data)
    assert report.ok, report.failures


def test_health_and_version(served: ServedGraph) -> None:
    assert httpx.get(f"{served.url}/health").json() == {"status": "ok"}
    version = httpx.get(f"{served.url}/version").json()
    assert version["mode"] == "tiny"
    assert "splat" in version["formats"]
    assert {stage: source["mode"] for stage, source in version["weights"].items()} == dict.fromkeys(
        ("text_to_image", "background", "image_to_3d"), "tiny"
    )


def assert_timings(response: httpx.Response, stages: list[str]) -> None:
    timings = parse_server_timing(response.headers["server-timing"])
    assert list(timings) == [*stages, "total"]
    assert all(seconds > 0 for seconds in timings.values())
    assert timings["total"] >= sum(timings[stage] for stage in stages) * 0.5


def assert_valid_glb(data: bytes, textured: bool) -> trimesh.Trimesh:
    """Khronos-valid, in the unit cube, outward wound, and textured or vertex-coloured as asked."""
    report = validate_glb(data)
    assert report.errors == 0, report.messages
    primitive = pygltflib.GLTF2.load_from_bytes(data).meshes[0].primitives[0]
    assert (primitive.attributes.TEXCOORD_0 is not None) == textured
    assert (primitive.attributes.COLOR_0 is not None) != textured
    mesh = load_mesh(data, "glb")
    assert np.abs(mesh.bounds).max() <= 0.5 + 1e-5 and mesh.volume > 0
    return mesh


def test_default_glb_is_uv_textured_in_the_unit_cube(served: ServedGraph) -> None:
    response = post_json(served, {"prompt": "a blue cube", "seed": 1})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "model/gltf-binary"
    mesh = assert_valid_glb(response.content, textured=True)
    assert int(response.headers["x-faces"]) == len(mesh.faces)
    assert_timings(response, UV_STAGES)


@pytest.mark.parametrize("faces", [1000, 4000])
@pytest.mark.parametrize("source", ["prompt", "image"])
def test_every_glb_variant_passes_the_khronos_validator(served: ServedGraph, source: str, faces: int) -> None:
    body = {"prompt": "a lamp"} if source == "prompt" else {"image": image_b64("chair.png")}
    for texture in ("vertex", "uv"):
        response = post_json(served, {**body, "faces": faces, "texture": texture, "texture_size": 256})
        assert response.status_code == 200, response.text
        assert len(assert_valid_glb(response.content, textured=texture == "uv").faces) <= faces


def test_text_prompt_to_vertex_colour_glb_with_timings(served: ServedGraph) -> None:
    response = post_json(served, {"prompt": "a blue cube", "seed": 1, "texture": "vertex"})
    assert response.status_code == 200, response.text
    assert_valid_glb(response.content, textured=False)
    assert_timings(response, STAGES)


@pytest.mark.parametrize(("fmt", "file_type"), [("obj", "obj"), ("ply", "ply")])
def test_text_prompt_to_other_mesh_formats(served: ServedGraph, fmt: str, file_type: str) -> None:
    response = post_json(served, {"prompt": "a wooden chair", "format": fmt, "texture": "vertex"})
    assert response.status_code == 200, response.text
    assert len(load_mesh(response.content, file_type).faces) > 0


def test_textured_obj_is_a_zip_of_obj_mtl_and_texture(served: ServedGraph) -> None:
    response = post_json(served, {"prompt": "a wooden chair", "format": "obj", "texture": "uv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert {"mesh.obj", "mesh.mtl"} <= set(archive.namelist())
    assert "map_Kd" in archive.read("mesh.mtl").decode()


def test_image_prompt_seed_seeds_the_splat_sampling(served: ServedGraph) -> None:
    bodies = [{"image": image_b64("chair.png"), "format": "splat", "seed": seed} for seed in (1, 1, 2)]
    first, again, other = (post_json(served, body).content for body in bodies)
    assert first == again and first != other


def test_text_prompt_to_splat(served: ServedGraph) -> None:
    response = post_json(served, {"prompt": "a coffee mug", "format": "splat", "up": "-y"})
    assert response.status_code == 200, response.text
    assert_valid_splat(response.content)


def test_image_prompt_skips_text_to_image(served: ServedGraph) -> None:
    response = post_json(served, {"image": image_b64("chair.png"), "format": "glb", "texture": "vertex"})
    assert response.status_code == 200, response.text
    timings = parse_server_timing(response.headers["server-timing"])
    assert "text_to_image" not in timings
    assert len(load_mesh(response.content, "glb").faces) > 0


def test_same_seed_same_asset(served: ServedGraph) -> None:
    first = post_json(served, {"prompt": "a dragon statue", "seed": 7, "format": "obj", "texture": "vertex"})
    second = post_json(served, {"prompt": "a dragon statue", "seed": 7, "format": "obj", "texture": "vertex"})
    assert first.status_code == second.status_code == 200
    assert first.content == second.content


def test_three_gen_form_endpoint_text_and_base64_image(served: ServedGraph) -> None:
    text = httpx.post(f"{served.url}/generate/", data={"prompt": "a sports car"}, timeout=TIMEOUT)
    assert text.status_code == 200, text.text
    assert_valid_splat(text.content)
    image = httpx.post(f"{served.url}/generate/", data={"prompt": image_b64("ghost_rgba.png")}, timeout=TIMEOUT)
    assert image.status_code == 200, image.text
    assert "text_to_image" not in parse_server_timing(image.headers["server-timing"])
    assert_valid_splat(image.content)


def test_404gen_multipart_endpoint(served: ServedGraph) -> None:
    files = {"prompt_image_file": ("teapot.png", (FIXTURES / "teapot.png").read_bytes(), "image/png")}
    response = httpx.post(f"{served.url}/generate", files=files, data={"seed": "3"}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert_valid_splat(response.content)


def test_four_concurrent_requests_all_succeed(served: ServedGraph) -> None:
    bodies = [{"prompt": f"object number {i}", "seed": i, "format": fmt} for i, fmt in enumerate(["glb", "splat"] * 2)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda body: post_json(served, body), bodies))
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert len(load_mesh(responses[0].content, "glb").faces) > 0
    assert_valid_splat(responses[1].content)
