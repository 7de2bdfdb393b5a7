"""Small CPU renderers that see what 404-GEN validators see (numpy, vectorised, no GPU).

* ``validator_cameras``: the validators' orbit (radius 2.5 around +Y, 15° above the equator,
  vertical fov 49.1°, square images, ``theta = linspace(0, 360, views)`` so the first and last
  views coincide as theirs do; theta = 0 looks from +Z with +X to the right). Cameras follow the
  OpenCV convention (x right, y down, z forward), principal point ``size // 2``, pixel centres
  at ``i + 0.5``.
* ``validator_scene``: their normalisation: centres minus the *scalar* mean of all coordinates,
  the largest extent of the centres scaled to 1.5, scales likewise, opacities (after sigmoid)
  multiplied by extent / 1.5 and clipped to [0, 1]; colours 0.5 + C0 * f_dc, DC only.
* ``render_splat``: EWA splatting like gsplat's default: 2D covariance J W Σ Wᵀ Jᵀ + 0.3 px²,
  3-sigma footprints, alpha = min(0.999, o·exp(-½ dᵀ Σ⁻¹ d)) dropped below 1/255, sorted by
  depth, composited front to back over a white background.
* ``render_mesh``: z-buffer rasteriser with perspective-correct vertex-colour interpolation,
  both faces of each triangle visible; ``render_textured_mesh`` samples a UV texture instead,
  trilinearly from its mip pyramid as a GPU does.

Both rasterisers turn each primitive's pixel bounding box into fragments, then resolve
visibility with one sort by (pixel, depth).
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from gen3d.orientation import quaternion_to_matrix
from gen3d.results import Gaussians

SH_C0 = 0.28209479177387814
VALIDATOR_EXTENT = 1.5
_NEAR = 0.01
_LOW_PASS = 0.3  # px², gsplat's eps2d
_MIN_ALPHA = 1.0 / 255.0
_MAX_ALPHA = 0.999
_MAX_CANDIDATES = 1 << 22  # candidate fragments per vectorised batch (bounds peak memory)


@dataclass(frozen=True)
class Camera:
    """Pinhole camera, OpenCV convention.

    Attributes:
        rotation: (3, 3) world -> camera rotation.
        translation: (3,) world -> camera translation (p_cam = rotation @ p + translation).
        focal: focal length in pixels (square pixels, same fov both ways).
        size: image side in pixels (square images).
    """

    rotation: np.ndarray
    translation: np.ndarray
    focal: float
    size: int

    @property
    def principal(self) -> float:
        """Principal point coordinate (both axes), ``size // 2`` as the validators use."""
        return float(self.size // 2)

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> camera coordinates (N, 3) float64."""
        return points.astype(np.float64) @ self.rotation.T + self.translation

    def project(self, cam_points: np.ndarray) -> np.ndarray:
        """Camera points (N, 3) with z > 0 -> pixel coordinates (N, 2)."""
        return self.focal * cam_points[:, :2] / cam_points[:, 2:3] + self.principal


@dataclass(frozen=True)
class Render:
    """One rendered view.

    Attributes:
        rgb: (H, W, 3) float32 in [0, 1], composited over the background ((H, W, C) for a
            mesh rendered with C-channel vertex values).
        alpha: (H, W) float32 accumulated opacity (coverage) in [0, 1].
    """

    rgb: np.ndarray
    alpha: np.ndarray


@dataclass(frozen=True)
class ValidatorFit:
    """The validators' similarity ``p -> (p - offset) * scale`` (a scalar offset on all axes)."""

    offset: float
    scale: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points (N, 3) into the validators' render frame."""
        return (points.astype(np.float64) - self.offset) * self.scale


@dataclass(frozen=True)
class SplatScene:
    """Activated gaussians ready to rasterise.

    Attributes:
        means: (N, 3) float64 centres. scales: (N, 3) linear scales. rotations: (N, 3, 3).
        opacities: (N,) in [0, 1]. colors: (N, 3) RGB. fit: the normalisation that was applied.
    """

    means: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    opacities: np.ndarray
    colors: np.ndarray
    fit: ValidatorFit


def orbit_camera(theta_deg: float, size: int = 518, elevation_deg: float = 15.0, radius: float = 2.5,
                 fov_deg: float = 49.1) -> Camera:  # fmt: skip
    """Camera on the validators' orbit at azimuth ``theta_deg`` looking at the origin, +Y up."""
    theta, elevation = np.deg2rad(theta_deg), np.deg2rad(elevation_deg)
    position = radius * np.array(
        [np.cos(elevation) * np.sin(theta), np.sin(elevation), np.cos(elevation) * np.cos(theta)]
    )
    backward = position / np.linalg.norm(position)
    right = np.cross([0.0, 1.0, 0.0], backward)
    right /= np.linalg.norm(right)
    up = np.cross(backward, right)
    rotation = np.stack([right, -up, -backward])  # rows: camera x (right), y (down), z (forward)
    focal = size / (2.0 * np.tan(0.5 * np.deg2rad(fov_deg)))
    return Camera(rotation=rotation, translation=-rotation @ position, focal=float(focal), size=size)


def validator_cameras(views: int = 16, size: int = 518) -> list[Camera]:
    """The validators' ``views`` cameras: azimuths ``linspace(0, 360, views)``."""
    return [orbit_camera(float(theta), size=size) for theta in np.linspace(0.0, 360.0, views)]


def validator_fit(means: np.ndarray) -> ValidatorFit:
    """The validators' normalisation of centres (N, 3): scalar mean, largest extent -> 1.5.

    A splat of coincident centres (zero extent, which they would divide by) is left unscaled.
    """
    extent = float((means.max(axis=0) - means.min(axis=0)).max())
    scale = VALIDATOR_EXTENT / extent if extent > 0 else 1.0
    return ValidatorFit(offset=float(means.astype(np.float64).mean()), scale=scale)


def validator_scene(g: Gaussians) -> SplatScene:
    """Activate a splat exactly as the validators load and normalise it."""
    fit = validator_fit(g.means)
    quats = g.rotations.astype(np.float64)
    opacities = 1.0 / (1.0 + np.exp(-g.opacity.astype(np.float64)))
    return SplatScene(
        means=fit.apply(g.means),
        scales=np.exp(g.log_scales.astype(np.float64)) * fit.scale,
        rotations=quaternion_to_matrix(quats),
        opacities=np.clip(opacities / fit.scale, 0.0, 1.0),
        colors=0.5 + SH_C0 * g.f_dc.astype(np.float64),
        fit=fit,
    )


def _fragments(lo: np.ndarray, hi: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Pixels inside integer boxes, batched: yields (item index, px, py) arrays of equal length.

    Args:
        lo: (M, 2) inclusive lower pixel corners (x, y). hi: (M, 2) inclusive upper corners.
        size: image side; boxes are clipped to it.
    """
    lo, hi = np.maximum(lo, 0), np.minimum(hi, size - 1)
    valid = np.flatnonzero((hi >= lo).all(axis=1))
    span = (hi[valid] - lo[valid]).max(axis=1) + 1
    # Boxes are padded to the next power of two, so each class is one dense (items, S, S) grid.
    classes = np.ceil(np.log2(span)).astype(int)
    for level in np.unique(classes):
        side = 1 << int(level)
        items = valid[classes == level]
        offsets = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="xy"), -1).reshape(-1, 2)
        step = max(1, _MAX_CANDIDATES // (side * side))
        for start in range(0, len(items), step):
            batch = items[start : start + step]
            pixels = lo[batch][:, None, :] + offsets[None, :, :]
            inside = (pixels <= hi[batch][:, None, :]).all(axis=2)
            which, slot = np.nonzero(inside)
            yield batch[which], pixels[which, slot, 0], pixels[which, slot, 1]


def _composite(pixel: np.ndarray, depth: np.ndarray, alpha: np.ndarray, color: np.ndarray, size: int,
               background: float) -> Render:  # fmt: skip
    """Front-to-back alpha compositing of fragments, all pixels at once.

    Transmittance before a fragment is exp of the exclusive cumulative sum of log(1 - alpha)
    within its pixel, computed for all pixels at once after one (pixel, depth) sort.
    """
    order = np.lexsort((depth, pixel))
    pixel, alpha, color = pixel[order], alpha[order], color[order]
    log_keep = np.log1p(-alpha)
    running = np.cumsum(log_keep)
    first = np.flatnonzero(np.diff(pixel, prepend=-1) != 0)
    before_pixel = np.repeat(running[first] - log_keep[first], np.diff(np.append(first, len(pixel))))
    weight = alpha * np.exp(running - log_keep - before_pixel)
    n = size * size
    coverage = np.bincount(pixel, weights=weight, minlength=n)
    rgb = np.stack([np.bincount(pixel, weights=weight * color[:, c], minlength=n) for c in range(3)], axis=1)
    rgb += (1.0 - coverage)[:, None] * background
    return Render(
        rgb=np.clip(rgb, 0.0, 1.0).reshape(size, size, 3).astype(np.float32),
        alpha=np.clip(coverage, 0.0, 1.0).reshape(size, size).astype(np.float32),
    )


def render_splat(scene: SplatScene, camera: Camera, background: float = 1.0) -> Render:
    """Rasterise gaussians (EWA splatting, see module docstring) for one camera."""
    cam = camera.to_camera(scene.means)
    keep = cam[:, 2] > _NEAR
    cam, z = cam[keep], cam[keep, 2]
    # 1. Screen-space covariances: J W Σ Wᵀ Jᵀ with the affine (local) projection Jacobian.
    world_axes = scene.rotations[keep] * scene.scales[keep][:, None, :]  # R S
    cam_axes = camera.rotation @ world_axes
    limit = 1.3 * 0.5 * camera.size / camera.focal  # gsplat clamps x/z, y/z to 1.3 x tan(fov/2)
    tx, ty = (np.clip(cam[:, i] / z, -limit, limit) for i in (0, 1))
    jac = np.zeros((len(z), 2, 3))
    jac[:, 0, 0] = jac[:, 1, 1] = camera.focal / z
    jac[:, 0, 2], jac[:, 1, 2] = -camera.focal * tx / z, -camera.focal * ty / z
    screen_axes = jac @ cam_axes
    cov = screen_axes @ screen_axes.transpose(0, 2, 1) + _LOW_PASS * np.eye(2)
    a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    det = a * c - b * b
    # 2. 3-sigma pixel boxes around the projected centres.
    centre = camera.project(cam)
    lambda_max = 0.5 * (a + c) + np.sqrt(np.maximum(0.25 * (a - c) ** 2 + b * b, 0.0))
    radius = np.ceil(3.0 * np.sqrt(lambda_max))
    lo = np.floor(centre - radius[:, None]).astype(np.int64)
    hi = np.ceil(centre + radius[:, None]).astype(np.int64)
    opacity, colors = scene.opacities[keep], scene.colors[keep]
    parts: list[tuple[np.ndarray, ...]] = []
    for item, px, py in _fragments(lo, hi, camera.size):
        dx, dy = px + 0.5 - centre[item, 0], py + 0.5 - centre[item, 1]
        power = -0.5 * (c[item] * dx * dx - 2.0 * b[item] * dx * dy + a[item] * dy * dy) / det[item]
        alpha = np.minimum(_MAX_ALPHA, opacity[item] * np.exp(power))
        ok = alpha >= _MIN_ALPHA
        parts.append((py[ok] * camera.size + px[ok], z[item[ok]], alpha[ok], colors[item[ok]]))
    if not parts:
        return _composite(*_empty_fragments(), size=camera.size, background=background)
    pixel, depth, alpha, color = (np.concatenate(p) for p in zip(*parts))
    return _composite(pixel, depth, alpha, color, camera.size, background)


def _empty_fragments() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros((0, 3))


def _visible_fragments(vertices: np.ndarray, faces: np.ndarray, attributes: np.ndarray, camera: Camera
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The nearest fragment of each covered pixel, with perspective-correct vertex attributes.

    Args:
        vertices: (V, 3) world positions. faces: (F, 3). attributes: (V, K) per-vertex values.
        camera: the view.

    Returns:
        pixel (N,) flat indices, face (N,) indices, attributes (N, K) interpolated, and the
        faces' screen-space areas (F,) in px².
    """
    cam = camera.to_camera(vertices)
    in_front = (cam[faces, 2] > _NEAR).all(axis=1)
    screen = camera.project(np.where(cam[:, 2:3] > _NEAR, cam, 1.0))
    tri = screen[faces]  # (F, 3, 2)
    lo = np.floor(tri.min(axis=1)).astype(np.int64)
    hi = np.ceil(tri.max(axis=1)).astype(np.int64)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    inv_z = 1.0 / cam[:, 2]
    drawn = np.flatnonzero(in_front & (np.abs(area) > 1e-12))
    parts: list[tuple[np.ndarray, ...]] = []
    for index, px, py in _fragments(lo[drawn], hi[drawn], camera.size):
        item = drawn[index]
        dx, dy = px + 0.5 - tri[item, 0, 0], py + 0.5 - tri[item, 0, 1]
        u = (dx * e2[item, 1] - dy * e2[item, 0]) / area[item]
        v = (e1[item, 0] * dy - e1[item, 1] * dx) / area[item]
        bary = np.stack([1.0 - u - v, u, v], axis=1)
        inside = (bary >= 0.0).all(axis=1)
        item, bary = item[inside], bary[inside]
        # Perspective-correct weights: interpolate attribute / z and 1 / z linearly in screen space.
        weights = bary * inv_z[faces[item]]
        depth = 1.0 / weights.sum(axis=1)
        value = np.einsum("nc,ncd->nd", weights * depth[:, None], attributes[faces[item]])
        parts.append((py[inside] * camera.size + px[inside], depth, item, value))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, attributes.shape[1])), 0.5 * np.abs(area)
    pixel, depth, face, value = (np.concatenate(p) for p in zip(*parts))
    order = np.lexsort((depth, pixel))
    first = order[np.flatnonzero(np.diff(pixel[order], prepend=-1) != 0)]
    return pixel[first], face[first], value[first], 0.5 * np.abs(area)


def _opaque_render(pixel: np.ndarray, color: np.ndarray, size: int, background: float) -> Render:
    """An image of opaque fragments (one per pixel, (N, C) values) over ``background``."""
    rgb = np.full((size * size, color.shape[1]), background)
    rgb[pixel] = color
    alpha = np.zeros(size * size)
    alpha[pixel] = 1.0
    return Render(
        rgb=np.clip(rgb, 0.0, 1.0).reshape(size, size, -1).astype(np.float32),
        alpha=alpha.reshape(size, size).astype(np.float32),
    )


def render_mesh(vertices: np.ndarray, faces: np.ndarray, vertex_colors: np.ndarray, camera: Camera,
                background: float = 1.0) -> Render:  # fmt: skip
    """Z-buffer a triangle mesh with perspective-correct vertex colours (RGB in [0, 1], (V, 3)).

    Any number of channels (V, C) works alike (e.g. several colourings of one mesh in one pass).
    """
    pixel, _, color, _ = _visible_fragments(vertices, faces, vertex_colors, camera)
    return _opaque_render(pixel, color, camera.size, background)


def mip_pyramid(texture: np.ndarray) -> list[np.ndarray]:
    """Mip levels of a (T, T, C) float texture by 2x2 box filtering, down to 1 texel (odd sides padded)."""
    levels = [texture.astype(np.float64)]
    while levels[-1].shape[0] > 1:
        level = levels[-1]
        if level.shape[0] % 2:
            level = np.concatenate([level, level[-1:]], axis=0)
            level = np.concatenate([level, level[:, -1:]], axis=1)
        levels.append(0.25 * (level[0::2, 0::2] + level[1::2, 0::2] + level[0::2, 1::2] + level[1::2, 1::2]))
    return levels


def sample_bilinear(level: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup (N, C) at glTF UVs (N, 2) (origin top-left), clamped to the edge."""
    side = level.shape[0]
    x = np.clip(uv[:, 0] * side - 0.5, 0.0, side - 1.0)
    y = np.clip(uv[:, 1] * side - 0.5, 0.0, side - 1.0)
    x0, y0 = np.minimum(x.astype(np.int64), side - 2).clip(0), np.minimum(y.astype(np.int64), side - 2).clip(0)
    x1, y1 = np.minimum(x0 + 1, side - 1), np.minimum(y0 + 1, side - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = level[y0, x0] * (1 - fx) + level[y0, x1] * fx
    bottom = level[y1, x0] * (1 - fx) + level[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def sample_trilinear(pyramid: list[np.ndarray], uv: np.ndarray, lod: np.ndarray) -> np.ndarray:
    """Trilinear lookup (N, C): bilinear in the two mip levels around ``lod`` (N,), blended."""
    lod = np.clip(lod, 0.0, len(pyramid) - 1.0)
    low = np.floor(lod).astype(np.int64)
    out = np.zeros((len(uv), pyramid[0].shape[2]))
    for level in np.unique(low):
        pick = low == level
        upper = min(int(level) + 1, len(pyramid) - 1)
        t = (lod[pick] - level)[:, None]
        out[pick] = (1 - t) * sample_bilinear(pyramid[level], uv[pick]) + t * sample_bilinear(pyramid[upper], uv[pick])
    return out


def render_textured_mesh(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, texture: np.ndarray,
                         camera: Camera, background: float = 1.0, mipmaps: bool = True) -> Render:  # fmt: skip
    """Z-buffer a UV-mapped mesh, sampling ``texture`` with mipmaps like a GPU.

    Args:
        vertices: (V, 3). faces: (F, 3). uvs: (V, 2) glTF UVs. texture: (T, T, 3) uint8 or float in
            [0, 1]. camera: the view. background: grey level of empty pixels.
        mipmaps: trilinear filtering; False samples the full-size texture bilinearly, which is
            point sampling of the surface colour like ``render_mesh``'s.

    The mip level is chosen per face from its texel-to-pixel area ratio (GPUs use per-pixel
    derivatives; for triangles a few pixels wide the two agree closely).
    """
    image = texture.astype(np.float64) / 255.0 if texture.dtype == np.uint8 else texture.astype(np.float64)
    pixel, face, uv, screen_area = _visible_fragments(vertices, faces, uvs.astype(np.float64), camera)
    if not mipmaps:
        return _opaque_render(pixel, sample_bilinear(image, uv), camera.size, background)
    t = uvs[faces].astype(np.float64) * texture.shape[0]
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    texel_area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    lod = 0.5 * np.log2(np.maximum(texel_area, 1e-12) / np.maximum(screen_area, 1e-12))
    return _opaque_render(pixel, sample_trilinear(mip_pyramid(image), uv, lod[face]), camera.size, background)


def silhouette_iou(a: np.ndarray, b: np.ndarray, threshold: float = 0.5) -> float:
    """Intersection over union of two coverage maps (H, W) thresholded at ``threshold``."""
    mask_a, mask_b = a > threshold, b > threshold
    union = np.logical_or(mask_a, mask_b).sum()
    return float(np.logical_and(mask_a, mask_b).sum() / union) if union else 1.0


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of images in [0, 1] (H, W, C), over ``mask`` (H, W) pixels if given."""
    diff = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = diff[mask].mean() if mask is not None else diff.mean()
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def silhouette_taper(alpha: np.ndarray, band: float = 0.2, threshold: float = 0.5) -> float:
    """Mean silhouette width over the top ``band`` of its rows divided by that over the bottom band.

    Below 1 the silhouette narrows upward (a dome on top, e.g. a burger bun seen from the
    validators' slightly raised cameras); an upside-down render of the same object gives more.
    """
    mask = alpha > threshold
    widths = mask.sum(axis=1)[mask.any(axis=1)]
    if len(widths) == 0:
        return float("nan")
    k = max(1, int(band * len(widths)))
    return float(widths[:k].mean() / widths[-k:].mean())
