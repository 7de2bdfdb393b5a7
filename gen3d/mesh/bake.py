"""Texture baking (torch, CPU or CUDA): texels -> surface points -> colours -> dilated atlas.

1. ``rasterize_uv`` finds, for every texel centre within ``margin`` texels of a UV triangle's edge
   lines (and its box grown by ``margin``), the triangle it lies deepest in or closest to and the
   barycentrics of the centre's nearest point on it (conservative rasterisation: bilinear taps
   just outside a triangle's edge hold real surface colours, not gutter fill).
2. ``surface_points`` turns those into model-frame points, and ``color_fn`` colours them (in the
   service: TripoSR's colour field on the GPU, so the texture holds detail vertices cannot).
3. ``dilate`` grows the islands into the empty texels nearest first, so each island owns its half
   of a gutter; ``pull_push_fill`` then fills every texel left from coverage-weighted averages of
   coarser levels, so no mip level averages an island with empty (black) texels.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gen3d.results import TexturedMesh, UVMesh

#: Texels beyond a triangle's edge that still sample it: a bilinear tap is at most sqrt(2) texels
#: from the point it serves.
RASTER_MARGIN = 1.5
#: Candidate (triangle, texel) pairs per batch: about 150 bytes each, so ~300 MB at peak.
MAX_CANDIDATES = 1 << 21
#: Texels the islands are grown by, nearest first, before the coarse fill: half the default gutter,
#: so each island owns its side of a gutter. Measured (tests/mesh/test_bake.py's mip check on a
#: gradient): 4, 8 or 16 rings change no mip level's error, since pull-push's finest levels
#: already copy the nearest island; what leaks from level 2 on is the neighbouring island itself.
DILATION_TEXELS = 2

ColorFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TexelCoverage:
    """Texels that sample the surface, and where.

    Attributes:
        texel: (N,) int64 flat texel index, row-major (row = v * T).
        face: (N,) int64 face sampled by each texel.
        bary: (N, 3) float32 barycentric weights of the sampled point, non-negative, summing to 1.
    """

    texel: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor


def _candidate_batches(lo: torch.Tensor, hi: torch.Tensor) -> "list[tuple[torch.Tensor, torch.Tensor]]":
    """(box index (N,), texel x/y (N, 2)) pairs enumerating every texel of each box [lo, hi], batched.

    Boxes are cut into consecutive runs of at most ``MAX_CANDIDATES`` texels (a single larger box
    forms a run of its own), and each run is enumerated with one ``repeat_interleave``.
    """
    shape = hi - lo + 1  # (M, 2) box width and height in texels
    count = shape[:, 0] * shape[:, 1]
    end = torch.cumsum(count, 0)
    batches = []
    start = 0
    while start < len(count):
        before = int(end[start - 1]) if start else 0
        stop = max(start + 1, int(torch.searchsorted(end, before + MAX_CANDIDATES, right=True)))
        boxes = torch.arange(start, stop, device=lo.device)
        item = torch.repeat_interleave(boxes, count[start:stop])
        local = torch.arange(len(item), device=lo.device) - (end[item] - count[item] - before)
        width = shape[item, 0]
        batches.append((item, lo[item] + torch.stack([local % width, local // width], dim=1)))
        start = stop
    return batches


def _nearest_on_edges(p: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Barycentrics (N, 3) of the point nearest to ``p`` (N, 2) on the edges of ``tri`` (N, 3, 2)."""
    best_distance = torch.full((len(p),), torch.inf, device=p.device)
    best = torch.zeros(len(p), 3, device=p.device)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        edge = tri[:, j] - tri[:, i]
        t = (((p - tri[:, i]) * edge).sum(dim=1) / (edge * edge).sum(dim=1).clamp(min=1e-12)).clamp(0.0, 1.0)
        distance = (tri[:, i] + t[:, None] * edge - p).norm(dim=1)
        closer = distance < best_distance
        weights = torch.zeros(len(p), 3, device=p.device)
        weights[:, i], weights[:, j] = 1.0 - t, t
        best = torch.where(closer[:, None], weights, best)
        best_distance = torch.where(closer, distance, best_distance)
    return best


def rasterize_uv(uvs: torch.Tensor, faces: torch.Tensor, size: int, margin: float = RASTER_MARGIN) -> TexelCoverage:
    """Conservatively rasterise UV triangles into a ``size`` x ``size`` atlas, texel centres.

    A texel is reached by a triangle when its centre is at most ``margin`` outside each edge line
    and inside the triangle's box grown by ``margin``: every centre within ``margin`` of the
    triangle, and beside a corner a few up to sqrt(2) ``margin`` away.

    Args:
        uvs: (V, 2) float UVs in [0, 1], glTF convention (texel (x, y) centre = ((x, y) + 0.5) / T).
        faces: (F, 3) int64.
        size: atlas side T.
        margin: texels beyond a triangle's edges that still sample it.

    Returns:
        ``TexelCoverage`` with one entry per covered texel: where several triangles reach a texel,
        the one it lies deepest inside (or closest to) wins.
    """
    device = uvs.device
    tri = (uvs.float() * size - 0.5)[faces]  # (F, 3, 2) in texel-centre units
    lo = torch.ceil(tri.amin(dim=1) - margin).long().clamp(0, size - 1)
    hi = torch.floor(tri.amax(dim=1) + margin).long().clamp(0, size - 1)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    # Altitude over each vertex's opposite edge turns a barycentric into a distance in texels.
    opposite = torch.stack([tri[:, 2] - tri[:, 1], tri[:, 0] - tri[:, 2], tri[:, 1] - tri[:, 0]], dim=1)
    altitude = area2.abs()[:, None] / opposite.norm(dim=2).clamp(min=1e-12)
    valid = area2.abs() > 1e-12
    best = torch.full((size * size,), -torch.inf, dtype=torch.float32, device=device)
    face_of = torch.full((size * size,), -1, dtype=torch.int64, device=device)
    bary_of = torch.zeros(size * size, 3, dtype=torch.float32, device=device)
    valid_faces = torch.nonzero(valid).squeeze(1)
    for item, texel in _candidate_batches(lo[valid], hi[valid]):
        item = valid_faces[item]
        p = texel.float()
        a, b, c = tri[item, 0], tri[item, 1], tri[item, 2]
        w_b = ((p[:, 0] - a[:, 0]) * e2[item, 1] - (p[:, 1] - a[:, 1]) * e2[item, 0]) / area2[item]
        w_c = (e1[item, 0] * (p[:, 1] - a[:, 1]) - e1[item, 1] * (p[:, 0] - a[:, 0])) / area2[item]
        bary = torch.stack([1.0 - w_b - w_c, w_b, w_c], dim=1)
        depth = (bary * altitude[item]).amin(dim=1)  # signed distance inside the triangle, texels
        near = depth >= -margin
        index = texel[near, 1] * size + texel[near, 0]
        depth, item, bary = depth[near], item[near], bary[near]
        best.scatter_reduce_(0, index, depth, reduce="amax")
        # Ties (texel centres on shared edges) keep one candidate per texel, so that face and
        # barycentrics come from the same triangle.
        candidate = torch.arange(len(index), device=device)
        pick = torch.full((size * size,), -1, dtype=torch.int64, device=device)
        pick.scatter_reduce_(0, index, torch.where(depth >= best[index], candidate, -1), reduce="amax")
        win = pick[index] == candidate
        index, item, bary, outside = index[win], item[win], bary[win], depth[win] < 0
        # A texel centre outside its triangle samples the nearest point of the triangle's edges.
        bary[outside] = _nearest_on_edges(p[near][win][outside], tri[item[outside]])
        face_of[index] = item
        bary_of[index] = bary
    covered = torch.nonzero(face_of >= 0).squeeze(1)
    return TexelCoverage(texel=covered, face=face_of[covered], bary=bary_of[covered])


def surface_points(coverage: TexelCoverage, vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Model-frame points (N, 3) float32 sampled by the covered texels."""
    corners = vertices.float()[faces[coverage.face]]  # (N, 3, 3)
    return torch.einsum("nk,nkd->nd", coverage.bary, corners)


def dilate(texture: torch.Tensor, mask: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow filled texels outward by ``steps`` rings; each new texel is the mean of its filled neighbours.

    Args:
        texture: (T, T, C) float.
        mask: (T, T) bool, filled texels.
        steps: rings to add.

    Returns:
        (texture, mask) after growing.
    """
    weight = mask.to(texture.dtype)[None, None]  # (1, 1, T, T)
    colour = texture.permute(2, 0, 1)[None] * weight  # (1, C, T, T), zero where unfilled
    for _ in range(steps):
        # One pooling pass sums colours and counts filled neighbours together.
        pooled = F.avg_pool2d(torch.cat([colour, weight], dim=1), 3, stride=1, padding=1)
        grow = (weight == 0) & (pooled[:, -1:] > 0)
        colour = torch.where(grow, pooled[:, :-1] / pooled[:, -1:].clamp(min=1e-12), colour)
        weight = torch.where(grow, torch.ones_like(weight), weight)
    return colour[0].permute(1, 2, 0), weight[0, 0] > 0


def pull_push_fill(texture: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill every unfilled texel from coverage-weighted averages of coarser levels (pull-push).

    Args:
        texture: (T, T, C) float, T a power of two or any size (odd levels are padded).
        mask: (T, T) bool, filled texels.

    Returns:
        (T, T, C) with filled texels unchanged and every other texel set.
    """
    colour = texture.permute(2, 0, 1)[None]  # (1, C, T, T)
    weight = mask.to(texture.dtype)[None, None]
    levels = [(colour, weight)]
    while min(colour.shape[-2:]) > 1:
        summed = F.avg_pool2d(colour * weight, 2, ceil_mode=True)
        weight = F.avg_pool2d(weight, 2, ceil_mode=True)
        colour = summed / weight.clamp(min=1e-12)
        levels.append((colour, weight))
    filled = levels[-1][0]
    for colour, weight in reversed(levels[:-1]):
        coarse = F.interpolate(filled, size=colour.shape[-2:], mode="nearest")
        filled = torch.where(weight > 0, colour, coarse)
    return filled[0].permute(1, 2, 0)


def bake_texture(uv_mesh: UVMesh, color_fn: ColorFn, device: torch.device | str = "cpu",
                 dilation: int = DILATION_TEXELS) -> TexturedMesh:  # fmt: skip
    """Bake ``color_fn`` over the surface into ``uv_mesh``'s atlas.

    Args:
        uv_mesh: unwrapped mesh, model frame.
        color_fn: model-frame points (N, 3) float32 on ``device`` -> colours (N, 3) in [0, 1].
        device: where rasterisation, colour queries and dilation run.
        dilation: texels to grow islands by, nearest first, before the coarse fill.

    Returns:
        ``TexturedMesh`` with a (T, T, 3) uint8 texture, T = ``uv_mesh.texture_size``.

    Raises:
        ValueError: ``color_fn`` returned the wrong shape.
    """
    size = uv_mesh.texture_size
    vertices = torch.from_numpy(uv_mesh.vertices).to(device)
    faces = torch.from_numpy(uv_mesh.faces).to(device)
    coverage = rasterize_uv(torch.from_numpy(uv_mesh.uvs).to(device), faces, size)
    points = surface_points(coverage, vertices, faces)
    colors = color_fn(points)
    if colors.shape != points.shape:
        raise ValueError(f"color_fn: expected colours of shape {tuple(points.shape)}, got {tuple(colors.shape)}")
    texture = torch.zeros(size * size, 3, dtype=torch.float32, device=device)
    texture[coverage.texel] = colors.float().clamp(0.0, 1.0)
    mask = torch.zeros(size * size, dtype=torch.bool, device=device)
    mask[coverage.texel] = True
    texture, mask = dilate(texture.reshape(size, size, 3), mask.reshape(size, size), dilation)
    texture = pull_push_fill(texture, mask)
    pixels = (texture * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    return TexturedMesh(vertices=uv_mesh.vertices, faces=uv_mesh.faces, uvs=uv_mesh.uvs, texture=pixels)
