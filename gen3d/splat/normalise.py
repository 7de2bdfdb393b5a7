"""Export normalisation: bounding box centred at the origin, largest side = 1.

Validators re-centre by the scalar mean of all coordinates and rescale the largest extent of the
centres to 1.5, multiplying opacities by (extent / 1.5). Writing files already centred with
extent 1 (like the reference hamburger.ply) keeps what they see predictable. The same similarity
transform is applied to a mesh when it must line up with its splat (agreement renders).
"""

from dataclasses import dataclass

import numpy as np

from gen3d.errors import StageOutputError
from gen3d.results import Gaussians

#: Largest bounding-box side of an exported splat.
EXPORT_EXTENT = 1.0


@dataclass(frozen=True)
class BoxFit:
    """Similarity ``p -> (p - centre) * scale``.

    Attributes:
        centre: (3,) float64 per-axis bounding-box centre of the fitted points.
        scale: factor making the largest side equal the target extent.
    """

    centre: np.ndarray
    scale: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points (N, 3); returns float32."""
        return ((points.astype(np.float64) - self.centre) * self.scale).astype(np.float32)


def fit_box(points: np.ndarray, extent: float = EXPORT_EXTENT) -> BoxFit:
    """Fit the similarity that centres the bounding box of ``points`` (N, 3) with largest side ``extent``.

    Raises:
        StageOutputError: no points, non-finite points, or all points coincide.
    """
    if len(points) == 0 or not np.isfinite(points).all():
        raise StageOutputError(f"cannot normalise {len(points)} points (empty or non-finite)")
    lo, hi = points.min(axis=0).astype(np.float64), points.max(axis=0).astype(np.float64)
    side = float((hi - lo).max())
    if side <= 0.0:
        raise StageOutputError("cannot normalise: all points coincide")
    return BoxFit(centre=0.5 * (lo + hi), scale=extent / side)


def transform_gaussians(g: Gaussians, fit: BoxFit) -> Gaussians:
    """Apply ``fit`` to a splat: centres moved and scaled, log-scales shifted by log(scale)."""
    return Gaussians(
        means=fit.apply(g.means),
        f_dc=g.f_dc,
        opacity=g.opacity,
        log_scales=(g.log_scales + np.log(fit.scale)).astype(np.float32),
        rotations=g.rotations,
    )


def normalise_gaussians(g: Gaussians, extent: float = EXPORT_EXTENT) -> Gaussians:
    """Centre the splat's bounding box at the origin and make its largest side ``extent``."""
    return transform_gaussians(g, fit_box(g.means, extent))
