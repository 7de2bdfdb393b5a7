"""The export stage: mesh files (+Y up, vertex colours) and validator splats (+y / -y)."""

import io

import numpy as np
import pytest
import trimesh

from gen3d.config import ExportConfig
from gen3d.errors import InputError, StageOutputError
from gen3d.export import Exporter
from gen3d.results import MeshAsset
from gen3d.splat.from_mesh import mesh_to_gaussians
from gen3d.splat.ply import read_splat_ply
from gen3d.splat.validate import validate_splat


@pytest.fixture(scope="module")
def cone() -> MeshAsset:
    """Model frame: apex up (+z), a red marker vertex colour on the front (+x) side, else grey."""
    mesh = trimesh.creation.cone(radius=0.3, height=0.8, sections=32)
    colors = np.full((len(mesh.vertices), 3), 128, np.uint8)
    colors[mesh.vertices[:, 0] > 0.29] = (255, 0, 0)
    return MeshAsset(mesh.vertices.astype(np.float32), mesh.faces.astype(np.int64), colors)


@pytest.fixture(scope="module")
def exporter() -> Exporter:
    return Exporter.from_config(ExportConfig(splat_count=8000))


@pytest.mark.parametrize(("fmt", "media_type"), [("glb", "model/gltf-binary"), ("obj", "model/obj"),
                                                 ("ply", "application/ply")])  # fmt: skip
def test_mesh_files_parse_with_vertex_colours_and_y_up(exporter: Exporter, cone: MeshAsset, fmt: str,
                                                       media_type: str) -> None:  # fmt: skip
    exported = exporter.export(cone, fmt)
    assert (exported.media_type, exported.extension) == (media_type, fmt) and exported.seconds >= 0
    loaded = trimesh.load(io.BytesIO(exported.data), file_type=fmt, force="mesh", process=False)
    assert len(loaded.faces) == len(cone.faces)
    # Apex (model +z) is the highest point along +Y; the red front marker (model +x) faces +Z.
    assert loaded.vertices[:, 1].max() == pytest.approx(0.8, abs=1e-5)
    red = np.all(loaded.visual.vertex_colors[:, :3] == (255, 0, 0), axis=1)
    assert red.any() and (loaded.vertices[red, 2] > 0.29).all()
    # Outward winding survives the rotation: volume stays positive.
    assert loaded.volume > 0


def test_max_faces_decimates(cone: MeshAsset) -> None:
    sphere = trimesh.creation.icosphere(subdivisions=4)
    mesh = MeshAsset(sphere.vertices.astype(np.float32), sphere.faces, np.zeros((len(sphere.vertices), 3), np.uint8))
    data = Exporter(ExportConfig(max_faces=1000)).export(mesh, "glb").data
    assert len(trimesh.load(io.BytesIO(data), file_type="glb", force="mesh").faces) <= 1000


@pytest.mark.parametrize(("up", "top_sign"), [("+y", 1.0), ("-y", -1.0)])
def test_splat_is_normalised_valid_and_oriented(exporter: Exporter, cone: MeshAsset, up: str, top_sign: float) -> None:
    exported = exporter.export(cone, "splat", up=up)
    assert exported.media_type == "application/octet-stream" and exported.extension == "ply"
    report = validate_splat(exported.data)
    assert report.ok, report.summary()
    g = read_splat_ply(exported.data)
    apex = g.means[np.argmax(top_sign * g.means[:, 1])]
    assert np.hypot(apex[0], apex[2]) < 0.05  # the extreme point along "up" is the apex
    red = (0.5 + 0.28209479177387814 * g.f_dc)[:, 0] > 0.9
    assert (top_sign * g.means[red, 2] > 0).mean() > 0.95  # the front faces +Z (+y) or -Z (-y)


def test_gaussians_export_keeps_count_and_shifts_log_scales(exporter: Exporter, cone: MeshAsset) -> None:
    g = mesh_to_gaussians(cone, 8000)
    out = read_splat_ply(exporter.export(g, "splat").data)
    assert len(out) == len(g)
    extent = (g.means.max(axis=0) - g.means.min(axis=0)).max()
    np.testing.assert_allclose(out.log_scales - g.log_scales, -np.log(extent), atol=1e-5)


def test_bad_requests_and_bad_assets(exporter: Exporter, cone: MeshAsset) -> None:
    with pytest.raises(InputError, match="format"):
        exporter.export(cone, "fbx")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="up"):
        exporter.export(cone, "splat", up="z")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="format"):
        exporter.export(mesh_to_gaussians(cone, 100), "glb")
    empty = MeshAsset(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.uint8))
    with pytest.raises(StageOutputError, match="empty"):
        exporter.export(empty, "glb")
    nan_mesh = MeshAsset(cone.vertices.copy(), cone.faces, cone.vertex_colors)
    nan_mesh.vertices[0, 0] = np.nan
    with pytest.raises(StageOutputError, match="non-finite"):
        exporter.export(nan_mesh, "obj")
    g = mesh_to_gaussians(cone, 100)
    g.opacity[0] = np.inf
    with pytest.raises(StageOutputError, match="non-finite"):
        exporter.export(g, "splat")
