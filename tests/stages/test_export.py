"""The export stage: clean + decimated mesh files (+Y up, unit cube), UV remesh, validator splats."""

import io
import zipfile

import numpy as np
import pygltflib
import pytest
import trimesh

from gen3d.config import ExportConfig
from gen3d.errors import StageOutputError
from gen3d.formats import MeshOptions
from gen3d.mesh.decimate import decimate
from gen3d.mesh.decimate_chunks import ChunkedDecimator
from gen3d.mesh.unwrap import unwrap
from gen3d.results import Asset3D, MeshAsset, TexturedMesh
from gen3d.splat.from_mesh import mesh_to_gaussians
from gen3d.splat.ply import read_splat_ply
from gen3d.splat.validate import validate_splat
from gen3d.stages.export import Exporter
from tests.gltf_validator import validate_glb

VERTEX = MeshOptions(faces=20_000, texture="vertex", texture_size=256, resolution=64, normalize=True)


@pytest.fixture(scope="module")
def cone() -> MeshAsset:
    """Model frame: apex up (+z), a red marker vertex colour on the front (+x) side, else grey."""
    mesh = trimesh.creation.cone(radius=0.3, height=0.8, sections=32)
    colors = np.full((len(mesh.vertices), 3), 128, np.uint8)
    colors[mesh.vertices[:, 0] > 0.29] = (255, 0, 0)
    return MeshAsset(mesh.vertices.astype(np.float32), mesh.faces.astype(np.int64), colors)


@pytest.fixture(scope="module")
def sphere() -> MeshAsset:
    ico = trimesh.creation.icosphere(subdivisions=5, radius=0.6)  # 20,480 faces
    colors = ((ico.vertices * 0.5 + 0.5) * 255).astype(np.uint8)
    return MeshAsset(ico.vertices.astype(np.float32), ico.faces.astype(np.int64), colors)


@pytest.fixture(scope="module")
def exporter() -> Exporter:
    return Exporter.from_config(ExportConfig(splat_count=8000))


def load(data: bytes, file_type: str) -> trimesh.Trimesh:
    return trimesh.load(io.BytesIO(data), file_type=file_type, force="mesh", process=False)


def vertex_colors(data: bytes, file_type: str, loaded: trimesh.Trimesh) -> np.ndarray:
    """sRGB uint8 vertex colours (V, 4). A GLB's COLOR_0 is linear (glTF), read with pygltflib:
    trimesh drops it when the primitive also has a material."""
    if file_type != "glb":
        return np.asarray(loaded.visual.vertex_colors)
    gltf = pygltflib.GLTF2.load_from_bytes(data)
    accessor = gltf.accessors[gltf.meshes[0].primitives[0].attributes.COLOR_0]
    view = gltf.bufferViews[accessor.bufferView]
    blob = gltf.binary_blob()[view.byteOffset + (accessor.byteOffset or 0):][: view.byteLength]
    linear = np.frombuffer(blob, np.uint16, accessor.count * 4).reshape(-1, 4) / 65535.0
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.round(srgb * 255).astype(np.uint8)


@pytest.mark.parametrize(("fmt", "media_type"), [("glb", "model/gltf-binary"), ("obj", "model/obj"),
                                                 ("ply", "application/ply")])  # fmt: skip
def test_vertex_colour_files_parse_y_up_in_the_unit_cube(exporter: Exporter, cone: MeshAsset, fmt: str,
                                                         media_type: str) -> None:  # fmt: skip
    exported = exporter.export(Asset3D(cone), fmt, "+y", VERTEX)
    assert (exported.media_type, exported.extension) == (media_type, fmt)
    loaded = load(exported.data, fmt)
    assert len(loaded.faces) == exported.faces == len(cone.faces)
    # Apex (model +z) is the highest point along +Y; the red front marker (model +x) faces +Z.
    bounds = loaded.bounds
    assert np.abs(bounds).max() == pytest.approx(0.5, abs=1e-4) and np.ptp(bounds, axis=0).max() == pytest.approx(1.0)
    apex = loaded.vertices[np.argmax(loaded.vertices[:, 1])]
    assert np.hypot(apex[0], apex[2]) < 1e-4
    red = np.all(vertex_colors(exported.data, fmt, loaded)[:, :3] == (255, 0, 0), axis=1)
    assert red.any() and (loaded.vertices[red, 2] > 0.2).all()
    assert loaded.volume > 0  # outward winding survives the rotation


def test_normalize_false_keeps_the_model_scale(exporter: Exporter, cone: MeshAsset) -> None:
    kept = MeshOptions(**{**VERTEX.__dict__, "normalize": False})
    loaded = load(exporter.export(Asset3D(cone), "glb", "+y", kept).data, "glb")
    assert loaded.vertices[:, 1].max() - loaded.vertices[:, 1].min() == pytest.approx(0.8, abs=1e-5)


def test_faces_target_decimates_and_the_glb_is_valid(exporter: Exporter, sphere: MeshAsset) -> None:
    target = MeshOptions(**{**VERTEX.__dict__, "faces": 2000})
    exported = exporter.export(Asset3D(sphere), "glb", "+y", target)
    assert exported.faces <= 2000 and len(load(exported.data, "glb").faces) == exported.faces
    report = validate_glb(exported.data)
    assert report.errors == 0, report


def test_remesh_then_textured_glb_and_obj_zip(exporter: Exporter, sphere: MeshAsset) -> None:
    uv = MeshOptions(**{**VERTEX.__dict__, "texture": "uv", "faces": 5000})
    remeshed = exporter.remesh(Asset3D(sphere, color_field=np.zeros((3, 2, 4, 4), np.float16)), uv)
    assert len(remeshed.mesh.faces) <= 5000 and remeshed.texture_size == 256
    uv_mesh = unwrap(remeshed.mesh, remeshed.texture_size)
    texture = np.full((256, 256, 3), 200, np.uint8)
    baked = TexturedMesh(uv_mesh.vertices, uv_mesh.faces, uv_mesh.uvs, texture)
    glb = exporter.export(baked, "glb", "+y", uv)
    assert glb.media_type == "model/gltf-binary" and validate_glb(glb.data).errors == 0
    obj = exporter.export(baked, "obj", "+y", uv)
    assert (obj.media_type, obj.extension) == ("application/zip", "zip")
    names = set(zipfile.ZipFile(io.BytesIO(obj.data)).namelist())
    assert {"mesh.obj", "mesh.mtl"} <= names and any(name.startswith("texture.") for name in names)


def test_remesh_needs_the_colour_field(exporter: Exporter, sphere: MeshAsset) -> None:
    with pytest.raises(ValueError, match="colour field"):
        exporter.remesh(Asset3D(sphere), MeshOptions(**{**VERTEX.__dict__, "texture": "uv"}))


@pytest.mark.parametrize(("up", "top_sign"), [("+y", 1.0), ("-y", -1.0)])
def test_splat_is_normalised_valid_and_oriented(exporter: Exporter, cone: MeshAsset, up: str, top_sign: float) -> None:
    exported = exporter.export(cone, "splat", up, None)
    assert exported.media_type == "application/octet-stream" and exported.extension == "ply"
    assert exported.faces is None
    report = validate_splat(exported.data)
    assert report.ok, report.summary()
    g = read_splat_ply(exported.data)
    apex = g.means[np.argmax(top_sign * g.means[:, 1])]
    assert np.hypot(apex[0], apex[2]) < 0.05  # the extreme point along "up" is the apex
    red = (0.5 + 0.28209479177387814 * g.f_dc)[:, 0] > 0.9
    assert (top_sign * g.means[red, 2] > 0).mean() > 0.95  # the front faces +Z (+y) or -Z (-y)


def test_gaussians_export_keeps_count_and_shifts_log_scales(exporter: Exporter, cone: MeshAsset) -> None:
    g = mesh_to_gaussians(cone, 8000)
    out = read_splat_ply(exporter.export(Asset3D(cone, gaussians=g), "splat", "+y", None).data)
    assert len(out) == len(g)
    extent = (g.means.max(axis=0) - g.means.min(axis=0)).max()
    np.testing.assert_allclose(out.log_scales - g.log_scales, -np.log(extent), atol=1e-5)


def test_bad_assets_are_stage_output_errors_and_bad_calls_value_errors(exporter: Exporter, cone: MeshAsset) -> None:
    with pytest.raises(ValueError, match="format"):
        exporter.export(cone, "fbx", "+y", VERTEX)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mesh options"):
        exporter.export(cone, "glb", "+y", None)
    empty = MeshAsset(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.uint8))
    with pytest.raises(StageOutputError, match="empty"):
        exporter.export(empty, "glb", "+y", VERTEX)
    nan_mesh = MeshAsset(cone.vertices.copy(), cone.faces, cone.vertex_colors)
    nan_mesh.vertices[0, 0] = np.nan
    with pytest.raises(StageOutputError, match="non-finite"):
        exporter.export(nan_mesh, "obj", "+y", VERTEX)
    g = mesh_to_gaussians(cone, 100)
    g.opacity[0] = np.inf
    with pytest.raises(StageOutputError, match="non-finite"):
        exporter.export(Asset3D(cone, gaussians=g), "splat", "+y", None)


def test_large_meshes_decimate_in_chunks_on_the_configured_pool(sphere: MeshAsset) -> None:
    chunked = Exporter.from_config(ExportConfig(decimate_workers=2, chunked_above=10_000))
    try:
        uv = MeshOptions(**{**VERTEX.__dict__, "texture": "uv", "faces": 5000})
        remeshed = chunked.remesh(Asset3D(sphere, color_field=np.zeros((3, 2, 4, 4), np.float16)), uv)
        assert isinstance(chunked.decimator, ChunkedDecimator) and chunked.decimator._pool is not None
        assert 4900 <= len(remeshed.mesh.faces) <= 5000
        assert trimesh.Trimesh(remeshed.mesh.vertices, remeshed.mesh.faces, process=False).is_watertight
    finally:
        chunked.close()
    assert chunked.decimator._pool is None
    assert Exporter.from_config(ExportConfig(decimate_workers=1)).decimator is decimate
