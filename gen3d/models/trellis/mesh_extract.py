"""TRELLIS's mesh decoder output -> a triangle mesh (the reference's ``SparseFeatures2Mesh``, inference).

The mesh decoder (``SLatMeshDecoder``) upsamples the 64^3 structured latent twice, to
``MESH_RESOLUTION`` = 256 cubes per axis, and predicts ``MESH_CHANNELS_WITH_COLOR`` channels per
active cube: an sdf, a deformation and a colour for each of its 8 corners, and 21 FlexiCubes
weights. Corners that cubes share are averaged, and FlexiCubes runs on the cubes that have an
inside corner; the reference runs it on the dense 256^3 grid, where every other cube is uncrossed.
Grid vertices no active cube touches hold the reference's defaults (sdf 1, no deformation,
colour logit 0).

Frame: TRELLIS's voxel frame, axis i along voxel coordinate i (z up), the unit cube
[-0.5, 0.5]^3 centred on the origin; grid vertex (i, j, k) sits at (i, j, k) / resolution - 0.5
before its deformation (at most half a cube, tanh-bounded). The official GLB export maps
(x, y, z) to (x, z, -y), y up.
"""

from dataclasses import dataclass

import torch

from gen3d.models.trellis.flexicubes import CUBE_CORNERS, extract_isosurface, grid_index

#: Cubes per axis of the mesh decoder's output: the 64^3 latent grid subdivided twice.
MESH_RESOLUTION = 256
#: Channel layout of one active cube (the reference's order: sdf, deform, weights, colour).
SDF_CHANNELS = slice(0, 8)  # [8] sdf per corner, in world units before the bias
DEFORM_CHANNELS = slice(8, 32)  # [8, 3] per corner, tanh-bounded to half a cube
WEIGHT_CHANNELS = slice(32, 53)  # [21] FlexiCubes beta (12 edges), alpha (8 corners), gamma (1)
COLOR_CHANNELS = slice(53, 101)  # [8, 6] per corner logits: rgb, then a normal map (as colour)
BETA_WEIGHTS, ALPHA_WEIGHTS, GAMMA_WEIGHT = slice(0, 12), slice(12, 20), 20
MESH_CHANNELS = WEIGHT_CHANNELS.stop
MESH_CHANNELS_WITH_COLOR = COLOR_CHANNELS.stop
#: The deformation's reach relative to half a cube: just inside, so that vertices never meet.
_DEFORM_REACH = 1 - 1e-8


@dataclass(frozen=True)
class TrellisMesh:
    """The mesh TRELLIS's mesh decoder describes.

    Attributes:
        vertices: [V, 3] float32 positions in TRELLIS's voxel frame (see the module docstring),
            within about [-0.5, 0.5]^3. Vertices that no face uses (at the grid's border) are kept,
            as in the reference.
        faces: [F, 3] int64 vertex indices, counter-clockwise seen from outside (normals outward).
        vertex_attrs: [V, 6] float32 in [0, 1]: rgb at [:, :3], the normal map's colour at [:, 3:];
            None when the decoder predicts no colour.
        resolution: cubes per axis of the grid the mesh came from.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_attrs: torch.Tensor | None
    resolution: int

    @property
    def colors(self) -> torch.Tensor | None:
        """[V, 3] rgb in [0, 1], or None."""
        return None if self.vertex_attrs is None else self.vertex_attrs[:, :3]

    @property
    def is_empty(self) -> bool:
        """True when no surface crossed the grid (the reference's ``success`` is False)."""
        return self.vertices.shape[0] == 0 or self.faces.shape[0] == 0


def extract_mesh(coords: torch.Tensor, feats: torch.Tensor, resolution: int = MESH_RESOLUTION) -> TrellisMesh:
    """FlexiCubes mesh of the mesh decoder's sparse output (one object).

    Runs in float32 whatever the feats' dtype; memory grows with the active cubes, never with
    resolution^3.

    Args:
        coords: [N, 3] integer cube coordinates in [0, resolution)^3, each cube once.
        feats: [N, C] float, C = ``MESH_CHANNELS_WITH_COLOR`` (101) or ``MESH_CHANNELS`` (53, no
            colour), laid out as the ``*_CHANNELS`` constants say.
        resolution: cubes per axis (256 for TRELLIS-image-large).

    Returns:
        The mesh, with per-vertex colours when the feats carry them.

    Raises:
        ValueError: for shapes, dtypes or coordinates out of range, or a cube listed twice.
    """
    _check_inputs(coords, feats, resolution)
    coords, feats = coords.long(), feats.float()
    with_color = feats.shape[1] == MESH_CHANNELS_WITH_COLOR
    active_keys, active_order = torch.sort(grid_index(coords, resolution))
    if active_keys.numel() > 1 and bool((active_keys[1:] == active_keys[:-1]).any()):
        raise ValueError("coords: expected each cube once, got repeated coordinates")

    # 1. Per-corner values, averaged over the active cubes that share each grid vertex.
    touched_keys, touched_values = _shared_corner_means(coords, feats, resolution, with_color)

    # 2. The cubes a surface may cross: any with an inside corner (untouched vertices are outside).
    cube_coords = _cubes_around(_grid_coords(touched_keys[touched_values[:, 0] < 0], resolution + 1), resolution)
    corner_keys = grid_index((cube_coords[:, None] + CUBE_CORNERS.to(coords.device)).view(-1, 3), resolution + 1)
    vertex_keys, cube_vertices = torch.unique(corner_keys, return_inverse=True)
    values = _lookup_rows(touched_keys, touched_values, vertex_keys, default=_vertex_defaults(touched_values))
    weights = _lookup_rows(active_keys, feats[active_order, WEIGHT_CHANNELS], grid_index(cube_coords, resolution))

    # 3. Deformed vertex positions, then FlexiCubes.
    grid = _grid_coords(vertex_keys, resolution + 1)
    positions = grid / resolution - 0.5 + _DEFORM_REACH / (2 * resolution) * torch.tanh(values[:, 1:4])
    surface = extract_isosurface(
        cube_coords, cube_vertices.view(-1, 8), positions, values[:, 0], resolution,
        beta=weights[:, BETA_WEIGHTS], alpha=weights[:, ALPHA_WEIGHTS], gamma=weights[:, GAMMA_WEIGHT],
        vertex_attributes=torch.sigmoid(values[:, 4:]) if with_color else None,
    )  # fmt: skip
    return TrellisMesh(surface.vertices, surface.faces, surface.attributes, resolution)


def _check_inputs(coords: torch.Tensor, feats: torch.Tensor, resolution: int) -> None:
    if coords.dim() != 2 or coords.shape[1] != 3 or coords.is_floating_point():
        raise ValueError(f"coords: expected an integer [N, 3] tensor, got {coords.dtype} {tuple(coords.shape)}")
    if feats.dim() != 2 or feats.shape[0] != coords.shape[0] or not feats.is_floating_point():
        got = f"{feats.dtype} {tuple(feats.shape)}"
        raise ValueError(f"feats: expected a float [{coords.shape[0]}, C] tensor, got {got}")
    if feats.shape[1] not in (MESH_CHANNELS, MESH_CHANNELS_WITH_COLOR):
        expected = f"{MESH_CHANNELS} or {MESH_CHANNELS_WITH_COLOR}"
        raise ValueError(f"feats: expected {expected} channels, got {feats.shape[1]}")
    if resolution < 1:
        raise ValueError(f"resolution: expected a positive cube count, got {resolution}")
    if coords.numel() and (int(coords.min()) < 0 or int(coords.max()) >= resolution):
        got = f"[{int(coords.min())}, {int(coords.max())}]"
        raise ValueError(f"coords: expected values in [0, {resolution}), got {got}")


def _shared_corner_means(
    coords: torch.Tensor, feats: torch.Tensor, resolution: int, with_color: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each touched grid vertex's mean over the cubes that have it as a corner.

    Returns:
        [T] long ascending vertex keys in the (resolution + 1)^3 grid, and [T, A] float values:
        sdf (biased by -1/resolution, as the reference does before averaging), deform xyz, and
        colour logits when present (A = 10, else 4).
    """
    count = coords.shape[0]
    parts = [
        feats[:, SDF_CHANNELS].reshape(count, 8, 1) - 1.0 / resolution,
        feats[:, DEFORM_CHANNELS].reshape(count, 8, 3),
    ]
    if with_color:
        parts.append(feats[:, COLOR_CHANNELS].reshape(count, 8, 6))
    per_corner = torch.cat(parts, dim=-1).flatten(0, 1)  # [N * 8, A]
    corners = (coords[:, None] + CUBE_CORNERS.to(coords.device)).view(-1, 3)
    keys, vertex_of_corner, sharing = torch.unique(
        grid_index(corners, resolution + 1), return_inverse=True, return_counts=True
    )
    sums = per_corner.new_zeros(keys.shape[0], per_corner.shape[1]).index_add_(0, vertex_of_corner, per_corner)
    return keys, sums / sharing[:, None]


def _vertex_defaults(like: torch.Tensor) -> torch.Tensor:
    """[A] values of an untouched vertex: outside (sdf 1), undeformed, colour logit 0."""
    default = like.new_zeros(like.shape[1])
    default[0] = 1.0
    return default


def _cubes_around(vertices: torch.Tensor, resolution: int) -> torch.Tensor:
    """[K, 3] long, ascending (x, y, z): the in-grid cubes that have any of ``vertices`` [T, 3] as a corner."""
    cubes = (vertices[:, None] - CUBE_CORNERS.to(vertices.device)).view(-1, 3)
    cubes = cubes[((cubes >= 0) & (cubes < resolution)).all(1)]
    return _grid_coords(torch.unique(grid_index(cubes, resolution)), resolution)


def _lookup_rows(
    sorted_keys: torch.Tensor, rows: torch.Tensor, queries: torch.Tensor, default: torch.Tensor | None = None
) -> torch.Tensor:
    """[Q, A] the row of each query key among ``sorted_keys`` [K] / ``rows`` [K, A], else ``default`` (zeros)."""
    if default is None:
        default = rows.new_zeros(rows.shape[1])
    out = default.expand(queries.shape[0], -1).clone()
    if sorted_keys.numel() == 0:
        return out
    position = torch.searchsorted(sorted_keys, queries).clamp_max(sorted_keys.numel() - 1)
    found = sorted_keys[position] == queries
    out[found] = rows[position[found]]
    return out


def _grid_coords(keys: torch.Tensor, size: int) -> torch.Tensor:
    """Inverse of ``grid_index``: [N] long keys -> [N, 3] long coordinates."""
    return torch.stack([keys // (size * size), keys // size % size, keys % size], dim=1)
