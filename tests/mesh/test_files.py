"""Mesh files: every GLB passes the Khronos glTF-Validator and loads in trimesh and pygltflib."""

import io
import struct
import zipfile

import numpy as np
import pygltflib
import pytest
import torch
import trimesh
from PIL import Image

from gen3d.mesh.bake import bake_texture
from gen3d.mesh.clean import clean
from gen3d.mesh.decimate import decimate
from gen3d.mesh.files import (
    encode_texture,
    write_textured_mesh,
    write_vertex_color_mesh,
)
from gen3d.mesh.glb import srgb_to_linear
from gen3d.mesh.metrics import signed_volumes
from gen3d.mesh.planted import checker
from gen3d.mesh.unwrap import unwrap
from gen3d.orientation import to_y_up
from gen3d.results import MeshAsset, TexturedMesh
from gen3d.splat.render import psnr
from tests.gltf_validator import available, validate_glbs

pytestmark = pytest.mark.skipif(not available(), reason="needs node and node_modules/gltf-validator")
FACE_TARGETS = (30_000, 20_000, 10_000)


@pytest.fixture(scope="module")
def meshes(blob: MeshAsset) -> dict[int, MeshAsset]:
    """The checker-coloured blob decimated to each face target."""
    source = clean(MeshAsset(blob.vertices, blob.faces, checker_colors(blob.vertices)))
    return {target: clean(decimate(source, target)) for target in FACE_TARGETS}


@pytest.fixture(scope="module")
def textured(meshes: dict[int, MeshAsset]) -> dict[int, TexturedMesh]:
    return {target: bake_texture(unwrap(mesh, 512), checker) for target, mesh in meshes.items()}


@pytest.fixture(scope="module")
def glbs(meshes: dict[int, MeshAsset], textured: dict[int, TexturedMesh]) -> dict[str, bytes]:
    files = {f"vertex-{t}": write_vertex_color_mesh(m, "glb") for t, m in meshes.items()}
    for target, mesh in textured.items():
        for image_format in ("png", "jpeg"):
            files[f"{image_format}-{target}"] = write_textured_mesh(mesh, "glb", image_format)
    files["png-unnormalised"] = write_textured_mesh(textured[10_000], "glb", "png", normalize=False)
    return files


def checker_colors(vertices: np.ndarray) -> np.ndarray:
    return np.round(checker(torch.from_numpy(vertices)).numpy() * 255).astype(np.uint8)


def test_every_glb_passes_the_khronos_validator(glbs: dict[str, bytes]) -> None:
    reports = dict(zip(glbs, validate_glbs(list(glbs.values()))))
    for name, report in reports.items():
        assert report.errors == 0, (name, report.messages)
        assert report.warnings == 0, (name, report.messages)
    assert reports["png-20000"].info["hasTextures"] and not reports["vertex-20000"].info["hasTextures"]
    assert reports["jpeg-10000"].info["totalTriangleCount"] == 10_000


def test_trimesh_reads_each_glb_upright_outward_in_the_unit_box(glbs: dict[str, bytes],
                                                                textured: dict[int, TexturedMesh]) -> None:  # fmt: skip
    for name, data in glbs.items():
        loaded = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh", process=False)
        assert signed_volumes(loaded.vertices, loaded.faces).sum() > 0, name
        if name == "png-unnormalised":  # TripoSR's scale, only turned +Y up
            np.testing.assert_allclose(loaded.vertices, to_y_up(textured[10_000].vertices), atol=1e-6)
        else:
            assert len(loaded.faces) == int(name.split("-")[1]), name
            assert np.abs(loaded.vertices).max() <= 0.5 + 1e-5, name
            assert (loaded.vertices.max(axis=0) - loaded.vertices.min(axis=0)).max() == pytest.approx(1.0, abs=1e-5)


def test_pygltflib_reads_the_textured_glb(glbs: dict[str, bytes], textured: dict[int, TexturedMesh]) -> None:
    gltf = pygltflib.GLTF2.load_from_bytes(glbs["png-20000"])
    material = gltf.materials[0].pbrMetallicRoughness
    assert material.metallicFactor == 0.0 and material.baseColorTexture.index == 0
    primitive = gltf.meshes[0].primitives[0]
    assert gltf.accessors[primitive.indices].count == 3 * len(textured[20_000].faces)
    image = gltf.images[0]
    assert image.mimeType == "image/png"
    view = gltf.bufferViews[image.bufferView]
    blob = gltf.binary_blob()[view.byteOffset : view.byteOffset + view.byteLength]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(blob))), textured[20_000].texture)
    uv = gltf.accessors[primitive.attributes.TEXCOORD_0]
    uv_view = gltf.bufferViews[uv.bufferView]
    uvs = np.frombuffer(gltf.binary_blob(), np.float32, uv.count * 2, uv_view.byteOffset).reshape(-1, 2)
    np.testing.assert_array_equal(uvs, textured[20_000].uvs)


def test_vertex_colours_are_stored_linear_and_round_trip(glbs: dict[str, bytes], meshes: dict[int, MeshAsset]) -> None:
    gltf = pygltflib.GLTF2.load_from_bytes(glbs["vertex-10000"])
    accessor = gltf.accessors[gltf.meshes[0].primitives[0].attributes.COLOR_0]
    assert accessor.componentType == 5123 and accessor.normalized and accessor.type == "VEC4"
    view = gltf.bufferViews[accessor.bufferView]
    stored = np.frombuffer(gltf.binary_blob(), np.uint16, accessor.count * 4, view.byteOffset).reshape(-1, 4)
    expected = srgb_to_linear(meshes[10_000].vertex_colors / 255.0)
    np.testing.assert_allclose(stored[:, :3] / 65535.0, expected, atol=1e-4)


def test_srgb_to_linear_matches_the_standard() -> None:
    np.testing.assert_allclose(srgb_to_linear(np.array([0.0, 0.04045, 0.5, 1.0])),
                               [0.0, 0.04045 / 12.92, 0.21404, 1.0], atol=1e-5)  # fmt: skip


def test_glb_header_lengths_are_consistent(glbs: dict[str, bytes]) -> None:
    data = glbs["jpeg-30000"]
    magic, version, length = struct.unpack_from("<III", data)
    assert (magic, version, length) == (0x46546C67, 2, len(data)) and length % 4 == 0


def test_jpeg_is_smaller_and_close_to_png(textured: dict[int, TexturedMesh]) -> None:
    texture = textured[20_000].texture
    png, jpeg = encode_texture(texture, "png"), encode_texture(texture, "jpeg")
    assert len(jpeg) < len(png)
    decoded = np.asarray(Image.open(io.BytesIO(jpeg))) / 255.0
    assert psnr(decoded, texture / 255.0) > 35.0
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), texture)


def test_textured_obj_zip_holds_obj_mtl_and_texture(textured: dict[int, TexturedMesh], tmp_path) -> None:
    mesh = textured[10_000]
    data = write_textured_mesh(mesh, "obj", "jpeg")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["mesh.mtl", "mesh.obj", "texture.jpg"]
        assert "map_Kd texture.jpg" in archive.read("mesh.mtl").decode()
        archive.extractall(tmp_path)
    loaded = trimesh.load(tmp_path / "mesh.obj", process=False, maintain_order=True)
    assert len(loaded.faces) == len(mesh.faces) and len(loaded.vertices) == len(mesh.vertices)
    # OBJ's vt counts v from the image's bottom row; glTF's from the top.
    np.testing.assert_allclose(loaded.visual.uv[:, 1], 1.0 - mesh.uvs[:, 1], atol=1e-6)
    assert loaded.visual.material.image.size == (512, 512)
    assert signed_volumes(loaded.vertices, loaded.faces).sum() > 0


@pytest.mark.parametrize("fmt", ["obj", "ply"])
def test_vertex_colour_obj_and_ply_keep_colours_upright(meshes: dict[int, MeshAsset], fmt: str) -> None:
    mesh = meshes[10_000]
    loaded = trimesh.load(io.BytesIO(write_vertex_color_mesh(mesh, fmt)), file_type=fmt, process=False)
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], mesh.vertex_colors)
    top = np.argmax(mesh.vertices[:, 2])  # model +z is file +y
    assert loaded.vertices[top, 1] == pytest.approx(loaded.vertices[:, 1].max())


def test_unknown_formats_name_the_field(meshes: dict[int, MeshAsset], textured: dict[int, TexturedMesh]) -> None:
    with pytest.raises(ValueError, match="fmt"):
        write_vertex_color_mesh(meshes[10_000], "stl")
    with pytest.raises(ValueError, match="fmt"):
        write_textured_mesh(textured[10_000], "ply")
    with pytest.raises(ValueError, match="image_format"):
        write_textured_mesh(textured[10_000], "glb", "webp")
