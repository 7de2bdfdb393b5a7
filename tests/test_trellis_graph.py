"""The graph with TRELLIS as its 3D stage (configs/serve_quality_tiny.yaml), through ``serve run``.

Tiny random weights with a planted silhouette: the outputs are demos, but every file must be what
the API promises (a valid GLB, a splat the validators' rules accept), and the service must say
which model made them.
"""

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trimesh

from gen3d.splat.validate import validate_splat
from tests import gltf_validator
from tests.conftest import ServedGraph, serving

pytestmark = pytest.mark.serve
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def trellis_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGraph]:
    with serving(tmp_path_factory.mktemp("serve_quality"), {"request_timeout_s": 240}, "serve_quality_tiny.yaml") as graph:
        yield graph


def test_version_names_trellis_and_its_sampler_options(trellis_served: ServedGraph) -> None:
    version = httpx.get(f"{trellis_served.url}/version", timeout=30).json()
    assert version["model"] == "trellis"
    assert set(version["sampler_options"]) == {"ss_steps", "ss_cfg", "slat_steps", "slat_cfg"}
    assert "resolution" not in version["mesh_options"]


def test_text_to_textured_glb_says_trellis_made_it(trellis_served: ServedGraph) -> None:
    body = {"prompt": "a wooden chair", "seed": 3, "faces": 4000, "texture_size": 256, "slat_steps": 1}
    response = httpx.post(f"{trellis_served.url}/generate", json=body, timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == "trellis"
    assert "image_to_3d" in response.headers["server-timing"] and "bake" in response.headers["server-timing"]
    mesh = trimesh.load(io.BytesIO(response.content), file_type="glb", force="mesh")
    assert 0 < len(mesh.faces) <= 4000 and mesh.volume > 0
    # quality_tiny decimates its ~20k-face meshes in chunks: the export replica's pool ran this one.
    assert "decimating large meshes in chunks on 2 processes" in trellis_served.log.read_text(errors="replace")
    if gltf_validator.available():
        report = gltf_validator.validate_glb(response.content)
        assert report.errors == 0, report.messages


def test_image_to_splat_is_trellis_own_gaussians_and_passes_the_validators(
    trellis_served: ServedGraph, tmp_path: Path
) -> None:
    image = (Path(__file__).parent / "fixtures" / "chair.png").read_bytes()
    files = {"prompt_image_file": ("chair.png", image, "image/png")}
    response = httpx.post(f"{trellis_served.url}/generate", files=files, data={"seed": "1"}, timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == "trellis"
    report = validate_splat(response.content)
    assert report.validator_ok, report.summary()


def test_trellis_refuses_a_marching_grid_and_out_of_range_steps(trellis_served: ServedGraph) -> None:
    for body, field in (({"prompt": "a cup", "resolution": 64}, "resolution"), ({"prompt": "a cup", "ss_steps": 99}, "ss_steps")):
        response = httpx.post(f"{trellis_served.url}/generate", json=body, timeout=30)
        assert (response.status_code, response.json()["field"]) == (422, field)
