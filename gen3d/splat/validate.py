"""Check a splat PLY against the 404-GEN validators' rejection rules, plus our own stricter ones.

Validator rules (any one gives score 0 there):
    ``unparsable``: the file cannot be read, or a splat field is missing;
    ``too_few``: fewer than 7000 gaussians;
    ``transparent``: more than 80 % of gaussians with sigmoid(opacity) < 1e-3;
    ``identity_rotations``: every quaternion equals (1, 0, 0, 0) after normalisation.
gen3d rules (what the validators do not check but would hurt the score or the viewer):
    ``non_finite``: NaN or Inf in any field;
    ``header_comment``: a ``comment`` line (the SPZ compressor miners submit through rejects it);
    ``extent``: largest bounding-box side of the centres not within ``extent_tolerance`` of 1;
    ``off_centre``: bounding-box centre further than ``centre_tolerance`` from the origin;
    ``floaters`` (optional): isolated gaussians that stretch the bounding box by over 5 %, which
        shrinks the object in the validators' renders (they rescale by the full extent).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from gen3d.results import Gaussians
from gen3d.splat.ply import PlyError, read_splat_ply

#: The validators reject splats of fewer gaussians.
MIN_SPLAT_COUNT = 7000
#: Gaussians per splat: mesh/splat renders agree at IoU >= 0.97 from here on (BENCHMARKS.md),
#: at ~1.8 MB.
DEFAULT_SPLAT_COUNT = 32768
TRANSPARENT_OPACITY = 1e-3
MAX_TRANSPARENT_SHARE = 0.8
_FLOATER_NEIGHBOURS = 8
_FLOATER_DISTANCE_RATIO = 5.0  # k-NN distance over the median k-NN distance that marks isolation
_FLOATER_STRETCH = 1.05


@dataclass(frozen=True)
class RuleFailure:
    """One failed rule.

    Attributes:
        rule: rule name (see module docstring).
        source: ``validator`` (the 404-GEN validators reject it) or ``gen3d`` (our own check).
        message: what was found.
    """

    rule: str
    source: Literal["validator", "gen3d"]
    message: str


@dataclass(frozen=True)
class SplatReport:
    """Outcome of ``validate_splat``.

    Attributes:
        count: gaussians in the file (0 when unparsable).
        extent: largest bounding-box side of the centres (NaN when unknown).
        centre: (3,) bounding-box centre of the centres.
        failures: failed rules, empty when everything passed.
    """

    count: int
    extent: float
    centre: tuple[float, float, float]
    failures: list[RuleFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every rule passed."""
        return not self.failures

    @property
    def validator_ok(self) -> bool:
        """True when no validator rule failed (the file would be scored, not rejected)."""
        return all(f.source != "validator" for f in self.failures)

    def summary(self) -> str:
        """One line per failure, or ``ok``, with count and extent."""
        head = f"{self.count} gaussians, extent {self.extent:.3f}, centre {np.round(self.centre, 3).tolist()}"
        lines = [f"  FAIL {f.rule} ({f.source}): {f.message}" for f in self.failures]
        return "\n".join([head + (": ok" if self.ok else ":")] + lines)


def _validator_failures(g: Gaussians) -> list[RuleFailure]:
    failures = []
    if len(g) < MIN_SPLAT_COUNT:
        failures.append(RuleFailure("too_few", "validator", f"{len(g)} gaussians, need at least {MIN_SPLAT_COUNT}"))
    with np.errstate(over="ignore"):
        alpha = 1.0 / (1.0 + np.exp(-g.opacity.astype(np.float64)))
    share = float(np.mean(alpha < TRANSPARENT_OPACITY)) if len(g) else 0.0
    if share > MAX_TRANSPARENT_SHARE:
        failures.append(
            RuleFailure("transparent", "validator", f"{share:.1%} of gaussians have opacity < {TRANSPARENT_OPACITY}")
        )
    q = g.rotations.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    if np.allclose(q, [1.0, 0.0, 0.0, 0.0]):
        failures.append(RuleFailure("identity_rotations", "validator", "every quaternion is identity (1, 0, 0, 0)"))
    return failures


def _floater_stretch(means: np.ndarray) -> float:
    """Ratio of the full bounding-box extent to the extent without isolated gaussians."""
    k = min(_FLOATER_NEIGHBOURS, len(means) - 1)
    distances, _ = cKDTree(means).query(means, k=k + 1)
    kth = distances[:, k]
    dense = means[kth <= _FLOATER_DISTANCE_RATIO * max(float(np.median(kth)), 1e-12)]
    core = float((dense.max(axis=0) - dense.min(axis=0)).max())
    full = float((means.max(axis=0) - means.min(axis=0)).max())
    return full / core if core > 0 else float("inf")


def _gen3d_failures(g: Gaussians, extent: float, centre: np.ndarray, extent_tolerance: float,
                    centre_tolerance: float, check_floaters: bool) -> list[RuleFailure]:  # fmt: skip
    failures = []
    if abs(extent - 1.0) > extent_tolerance:
        failures.append(RuleFailure("extent", "gen3d", f"largest side {extent:.4f}, expected 1 ± {extent_tolerance}"))
    if float(np.linalg.norm(centre)) > centre_tolerance:
        failures.append(
            RuleFailure("off_centre", "gen3d", f"box centre {np.round(centre, 4).tolist()}, expected the origin")
        )
    if check_floaters and len(g) > _FLOATER_NEIGHBOURS:
        stretch = _floater_stretch(g.means.astype(np.float64))
        if stretch > _FLOATER_STRETCH:
            failures.append(RuleFailure("floaters", "gen3d", f"isolated gaussians stretch the extent {stretch:.2f}x"))
    return failures


def validate_splat(source: bytes | str | Path, extent_tolerance: float = 0.05, centre_tolerance: float = 0.05,
                   check_floaters: bool = True) -> SplatReport:  # fmt: skip
    """Apply every rule of the module docstring to a splat PLY.

    Args:
        source: file bytes or path.
        extent_tolerance: allowed deviation of the largest side from 1.
        centre_tolerance: allowed distance of the bounding-box centre from the origin.
        check_floaters: run the (slower, k-NN based) floater check.

    Returns:
        A ``SplatReport``; never raises for a bad file (that is the ``unparsable`` rule).
    """
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        g = read_splat_ply(raw)
    except PlyError as err:
        return SplatReport(0, float("nan"), (np.nan,) * 3, [RuleFailure("unparsable", "validator", str(err))])
    failures = _validator_failures(g)
    header = raw[: raw.find(b"end_header")]
    if b"\ncomment" in header:
        failures.append(RuleFailure("header_comment", "gen3d", "header has a comment line"))
    arrays = [g.means, g.f_dc, g.opacity, g.log_scales, g.rotations]
    if not all(np.isfinite(a).all() for a in arrays):
        failures.append(RuleFailure("non_finite", "gen3d", "NaN or Inf in the gaussian fields"))
        return SplatReport(len(g), float("nan"), (np.nan,) * 3, failures)
    if len(g) == 0:
        return SplatReport(0, float("nan"), (np.nan,) * 3, failures)
    lo, hi = g.means.min(axis=0).astype(np.float64), g.means.max(axis=0).astype(np.float64)
    extent, centre = float((hi - lo).max()), 0.5 * (lo + hi)
    failures += _gen3d_failures(g, extent, centre, extent_tolerance, centre_tolerance, check_floaters)
    return SplatReport(len(g), extent, tuple(float(c) for c in centre), failures)
