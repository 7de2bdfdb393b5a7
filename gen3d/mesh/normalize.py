"""Model frame -> mesh-file frame: +Y up (``gen3d.orientation``), then optionally into the unit box.

Normalising centres the bounding box at the origin and scales its largest side to 1, so every
coordinate lies within ±0.5, with the splat export's ``fit_box``, so a mesh and a splat of one
object line up; the scale is uniform and the rotation proper, so winding and normal directions
survive.
"""

from dataclasses import replace
from typing import TypeVar

import numpy as np

from gen3d.mesh.clean import position_groups
from gen3d.orientation import to_y_up
from gen3d.results import MeshAsset, TexturedMesh
from gen3d.splat.normalise import EXPORT_EXTENT, fit_box

#: Largest bounding-box side of a normalised mesh file: the splat export's, so the two line up.
UNIT_EXTENT = EXPORT_EXTENT

AnyMesh = TypeVar("AnyMesh", MeshAsset, TexturedMesh)


def file_vertices(vertices: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Model-frame vertices (V, 3) -> y-up file frame (V, 3) float32, in the unit box if ``normalize``.

    Raises:
        StageOutputError: ``normalize`` asked for and the vertices have no extent.
    """
    y_up = to_y_up(vertices.astype(np.float64))
    if normalize:
        return fit_box(y_up, UNIT_EXTENT).apply(y_up)
    return y_up.astype(np.float32)


def to_file_frame(mesh: AnyMesh, normalize: bool = True) -> AnyMesh:
    """The same mesh, its vertices in the y-up file frame (see ``file_vertices``); faces unchanged.

    Args:
        mesh: a ``MeshAsset`` or ``TexturedMesh`` in the model frame.
        normalize: centre and scale into the unit box; False keeps TripoSR's scale (±0.87).
    """
    return replace(mesh, vertices=file_vertices(mesh.vertices, normalize))


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals (V, 3) float32, shared by vertices at the same position.

    UV seams split vertices; pooling by position keeps the shading smooth across them. A vertex
    with no area around it gets +Y, so every normal is unit length as glTF requires.
    """
    weld, first = position_groups(vertices)
    tri = vertices[faces].astype(np.float64)
    face_normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    corners = weld[faces].reshape(-1)
    pooled = np.stack(
        [np.bincount(corners, weights=np.repeat(face_normal[:, d], 3), minlength=len(first)) for d in range(3)], 1
    )
    normals = pooled[weld]
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    unit = np.where(length > 1e-20, normals / np.maximum(length, 1e-30), np.array([0.0, 1.0, 0.0]))
    return unit.astype(np.float32)
