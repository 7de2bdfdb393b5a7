"""Axis conventions between the model frame and exported files.

Frames:
    * **model frame** (TripoSR output, ``MeshAsset``/``Gaussians`` before export): z up, the input
      image's camera looks from +x (the front of the object faces +x), object within ±0.87.
    * **"+y" file frame** (glTF, three-gen-subnet validators): +Y up, front toward +Z.
      ``to_y_up`` maps (x, y, z) -> (y, z, x), a cyclic permutation, i.e. a proper rotation
      (det +1) of -120° about (1, 1, 1).
    * **"-y" file frame** (404-gen-subnet, 3DGS/SuperSplat viewers): the "+y" frame turned 180°
      about X, (x, y, z) -> (x, -y, -z); the object's up is -Y in file coordinates.

Every conversion is a rotation, so points, normals and gaussian quaternions all go through the
same matrix and face winding is preserved.
"""

from typing import Literal

import numpy as np

from gen3d.results import Gaussians, MeshAsset

#: Up axis of a splat file: "+y" (three-gen validators) or "-y" (404-gen, 3DGS viewers).
UpAxis = Literal["+y", "-y"]

#: Model frame (z up, front +x) -> "+y" file frame (y up, front +z): (x, y, z) -> (y, z, x).
Y_UP_FROM_MODEL = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
#: "+y" frame -> "-y" frame: 180° about X.
FLIP_ABOUT_X = np.diag([1.0, -1.0, -1.0])
#: File frame of each splat up-axis convention, from the model frame.
FILE_ROTATIONS: dict[str, np.ndarray] = {"+y": Y_UP_FROM_MODEL, "-y": FLIP_ABOUT_X @ Y_UP_FROM_MODEL}


def file_rotation(up: UpAxis) -> np.ndarray:
    """Rotation (3, 3) taking model-frame coordinates to the file frame of ``up``.

    Raises:
        ValueError: an unknown convention (the HTTP edge has checked requests already).
    """
    if up not in FILE_ROTATIONS:
        raise ValueError(f"up: expected one of {list(FILE_ROTATIONS)}, got {up!r}")
    return FILE_ROTATIONS[up]


def rotate_points(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Apply ``rotation`` (3, 3) to points or directions (N, 3); keeps the input dtype.

    einsum, not ``@``: with torch loaded, numpy's BLAS call for an (N, 3) product fights torch's
    threads and took 5-30 ms for 100k points on the 2-core machine.
    """
    return np.einsum("ij,nj->ni", rotation, points).astype(points.dtype, copy=False)


def to_y_up(points: np.ndarray) -> np.ndarray:
    """Model frame (z up, front +x) -> +Y up, front +Z: (x, y, z) -> (y, z, x). Shape (N, 3)."""
    return rotate_points(points, Y_UP_FROM_MODEL)


def from_y_up(points: np.ndarray) -> np.ndarray:
    """Inverse of ``to_y_up``: (x, y, z) -> (z, x, y). Shape (N, 3)."""
    return rotate_points(points, Y_UP_FROM_MODEL.T)


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a ⊗ b`` of (..., 4) quaternions in (w, x, y, z) order."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) of quaternions (..., 4) (w, x, y, z); normalised first."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (4,) (w, x, y, z) of a proper rotation (3, 3), with w >= 0.

    Raises:
        ValueError: if ``rotation`` is not orthonormal with determinant +1.
    """
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6) or np.linalg.det(rotation) < 0:
        raise ValueError(f"rotation: expected a proper rotation (orthonormal, det +1), got {rotation.tolist()}")
    m = rotation
    # Pick the numerically largest component first (Shepperd's method) to avoid dividing by ~0.
    diag = np.array([m[0, 0] + m[1, 1] + m[2, 2], m[0, 0], m[1, 1], m[2, 2]])
    k = int(np.argmax(diag))
    if k == 0:
        w = 0.5 * np.sqrt(1.0 + diag[0])
        q = np.array([w, (m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), (m[1, 0] - m[0, 1]) / (4 * w)])
    elif k == 1:
        x = 0.5 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = np.array([(m[2, 1] - m[1, 2]) / (4 * x), x, (m[0, 1] + m[1, 0]) / (4 * x), (m[0, 2] + m[2, 0]) / (4 * x)])
    elif k == 2:
        y = 0.5 * np.sqrt(1.0 - m[0, 0] + m[1, 1] - m[2, 2])
        q = np.array([(m[0, 2] - m[2, 0]) / (4 * y), (m[0, 1] + m[1, 0]) / (4 * y), y, (m[1, 2] + m[2, 1]) / (4 * y)])
    else:
        z = 0.5 * np.sqrt(1.0 - m[0, 0] - m[1, 1] + m[2, 2])
        q = np.array([(m[1, 0] - m[0, 1]) / (4 * z), (m[0, 2] + m[2, 0]) / (4 * z), (m[1, 2] + m[2, 1]) / (4 * z), z])
    return q if q[0] >= 0 else -q


def rotate_gaussians(g: Gaussians, rotation: np.ndarray) -> Gaussians:
    """Rotate a splat rigidly: centres by ``rotation``, orientations by its quaternion (left product).

    Scales and colours are frame-independent (DC colour has no view dependence).
    """
    q_rot = matrix_to_quaternion(rotation)
    rotations = quaternion_multiply(q_rot[None, :], g.rotations.astype(np.float64))
    return Gaussians(
        means=rotate_points(g.means, rotation),
        f_dc=g.f_dc,
        opacity=g.opacity,
        log_scales=g.log_scales,
        rotations=rotations.astype(np.float32),
    )


def rotate_mesh(mesh: MeshAsset, rotation: np.ndarray) -> MeshAsset:
    """Rotate mesh vertices; a proper rotation keeps counter-clockwise winding, so faces are unchanged."""
    vertices = rotate_points(mesh.vertices, rotation)
    return MeshAsset(vertices=vertices, faces=mesh.faces, vertex_colors=mesh.vertex_colors)


def orient_gaussians(g: Gaussians, up: UpAxis) -> Gaussians:
    """Model-frame splat -> file frame of ``up`` (see module docstring)."""
    return rotate_gaussians(g, file_rotation(up))


def orient_mesh(mesh: MeshAsset, up: UpAxis) -> MeshAsset:
    """Model-frame mesh -> file frame of ``up`` (see module docstring)."""
    return rotate_mesh(mesh, file_rotation(up))
