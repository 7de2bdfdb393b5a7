"""Binary glTF 2.0 (GLB) writer for one triangle mesh, vertex-coloured or textured.

Written directly (JSON + one binary buffer) so that every field the Khronos glTF-Validator checks
is under our control:

* a PBR material with ``metallicFactor`` 0 (glTF's default is 1, a metal that looks black
  without an environment map) and ``roughnessFactor`` 1;
* vertex colours converted from sRGB to linear, as glTF requires for ``COLOR_0``, stored as
  normalised uint16 so dark tones keep their precision (8-bit linear bands visibly);
* ``baseColorTexture`` (sRGB, as glTF expects) with mipmapped, edge-clamped sampling;
* unit ``NORMAL``s, so viewers shade smoothly instead of computing flat normals.
"""

import json
import struct

import numpy as np

from gen3d.mesh.normalize import vertex_normals

_GLB_MAGIC = 0x46546C67  # "glTF"
_JSON_CHUNK = 0x4E4F534A
_BIN_CHUNK = 0x004E4942
_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_FLOAT, _UNSIGNED_SHORT, _UNSIGNED_INT = 5126, 5123, 5125
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}
IMAGE_MIME = {"png": "image/png", "jpeg": "image/jpeg"}


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (same shape), the IEC 61966-2-1 curve."""
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


class _Buffer:
    """Accumulates 4-byte-aligned buffer views and their accessors for one GLB buffer."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, payload: bytes, target: int | None = None) -> int:
        """Append raw bytes as a buffer view; returns its index."""
        self.data.extend(b"\0" * (-len(self.data) % 4))
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(payload)}
        if target is not None:
            view["target"] = target
        self.data.extend(payload)
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, array: np.ndarray, component: int, target: int, normalized: bool = False,
                 bounds: bool = False) -> int:  # fmt: skip
        """Append a (N, K) or (N,) array as an accessor of ``component`` type; returns its index."""
        columns = 1 if array.ndim == 1 else array.shape[1]
        accessor = {
            "bufferView": self.view(np.ascontiguousarray(array).tobytes(), target),
            "componentType": component,
            "count": int(array.shape[0]),
            "type": _TYPES[columns],
        }
        if normalized:
            accessor["normalized"] = True
        if bounds:  # required for POSITION
            accessor["min"] = array.reshape(len(array), -1).min(axis=0).tolist()
            accessor["max"] = array.reshape(len(array), -1).max(axis=0).tolist()
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def _container(document: dict, binary: bytes) -> bytes:
    """GLB bytes: 12-byte header, JSON chunk (space-padded), BIN chunk (zero-padded)."""
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join([
        struct.pack("<III", _GLB_MAGIC, 2, total),
        struct.pack("<II", len(text), _JSON_CHUNK), text,
        struct.pack("<II", len(binary), _BIN_CHUNK), binary,
    ])  # fmt: skip


def _geometry(buffer: _Buffer, vertices: np.ndarray, faces: np.ndarray) -> tuple[dict, int]:
    """POSITION/NORMAL accessors and the index accessor (uint16 when the vertices allow)."""
    positions = vertices.astype(np.float32)
    attributes = {
        "POSITION": buffer.accessor(positions, _FLOAT, _ARRAY_BUFFER, bounds=True),
        "NORMAL": buffer.accessor(vertex_normals(positions, faces), _FLOAT, _ARRAY_BUFFER),
    }
    small = len(vertices) <= np.iinfo(np.uint16).max
    indices = faces.reshape(-1).astype(np.uint16 if small else np.uint32)
    return attributes, buffer.accessor(indices, _UNSIGNED_SHORT if small else _UNSIGNED_INT, _ELEMENT_ARRAY_BUFFER)


def _document(buffer: _Buffer, attributes: dict, indices: int, material: dict, **extra: list) -> dict:
    """The glTF JSON of one node with one primitive, referencing ``buffer``."""
    return {
        "asset": {"version": "2.0", "generator": "gen3d"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "object"}],
        "meshes": [{"primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}],
        "materials": [material],
        "accessors": buffer.accessors,
        "bufferViews": buffer.views,
        "buffers": [{"byteLength": len(buffer.data)}],
        **extra,
    }


def _pbr(**fields: object) -> dict:
    """A dielectric, fully rough material with the given ``pbrMetallicRoughness`` fields."""
    return {"name": "surface", "pbrMetallicRoughness": {"metallicFactor": 0.0, "roughnessFactor": 1.0, **fields}}


def vertex_color_glb(vertices: np.ndarray, faces: np.ndarray, vertex_colors: np.ndarray) -> bytes:
    """GLB of a vertex-coloured mesh.

    Args:
        vertices: (V, 3) float, file frame (y up). faces: (F, 3) int, counter-clockwise outside.
        vertex_colors: (V, 3) uint8 sRGB.
    """
    buffer = _Buffer()
    attributes, indices = _geometry(buffer, vertices, faces)
    linear = srgb_to_linear(vertex_colors[:, :3].astype(np.float64) / 255.0)
    rgba = np.concatenate([linear, np.ones((len(linear), 1))], axis=1)
    attributes["COLOR_0"] = buffer.accessor(np.round(rgba * 65535).astype(np.uint16), _UNSIGNED_SHORT,
                                            _ARRAY_BUFFER, normalized=True)  # fmt: skip
    return _container(_document(buffer, attributes, indices, _pbr()), bytes(buffer.data))


def textured_glb(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, image: bytes, image_format: str) -> bytes:
    """GLB of a mesh with a base-colour texture.

    Args:
        vertices: (V, 3) float, file frame (y up). faces: (F, 3) int, counter-clockwise outside.
        uvs: (V, 2) float in [0, 1], glTF convention (v down from the image's top row).
        image: the encoded texture (``gen3d.mesh.files.encode_texture``).
        image_format: ``png`` or ``jpeg``.

    Raises:
        ValueError: unknown ``image_format``.
    """
    if image_format not in IMAGE_MIME:
        raise ValueError(f"image_format: expected one of {list(IMAGE_MIME)}, got {image_format!r}")
    buffer = _Buffer()
    attributes, indices = _geometry(buffer, vertices, faces)
    attributes["TEXCOORD_0"] = buffer.accessor(uvs.astype(np.float32), _FLOAT, _ARRAY_BUFFER)
    image_view = buffer.view(image)
    document = _document(
        buffer, attributes, indices, _pbr(baseColorTexture={"index": 0, "texCoord": 0}),
        textures=[{"sampler": 0, "source": 0}],
        images=[{"bufferView": image_view, "mimeType": IMAGE_MIME[image_format]}],
        samplers=[{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR, "wrapS": _CLAMP_TO_EDGE,
                   "wrapT": _CLAMP_TO_EDGE}],
    )  # fmt: skip
    return _container(document, bytes(buffer.data))
