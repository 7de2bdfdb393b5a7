"""validate_splat: every rejection rule has a failing case; good splats pass."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gen3d.results import Gaussians
from gen3d.splat.ply import write_splat_ply
from gen3d.splat.validate import validate_splat

HAMBURGER = Path(__file__).resolve().parent.parent / "fixtures" / "hamburger.ply"


def good_splat(n: int = 8000, seed: int = 0) -> Gaussians:
    """Unit-extent, centred shell of gaussians with varied rotations and opaque-ish opacities."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n, 3))
    means = 0.5 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    means -= 0.5 * (means.min(axis=0) + means.max(axis=0))
    means /= (means.max(axis=0) - means.min(axis=0)).max()
    return Gaussians(
        means=means.astype(np.float32),
        f_dc=rng.normal(size=(n, 3)).astype(np.float32),
        opacity=np.full(n, 3.0, dtype=np.float32),
        log_scales=np.full((n, 3), -5.0, dtype=np.float32),
        rotations=rng.normal(size=(n, 4)).astype(np.float32),
    )


def failed_rules(g: Gaussians) -> set[str]:
    return {f.rule for f in validate_splat(write_splat_ply(g)).failures}


def test_hamburger_and_a_good_splat_pass() -> None:
    assert validate_splat(HAMBURGER).ok
    report = validate_splat(write_splat_ply(good_splat()))
    assert report.ok, report.summary()
    assert report.count == 8000 and abs(report.extent - 1.0) < 1e-5


def test_too_few_gaussians() -> None:
    g = good_splat(6999)
    assert failed_rules(g) == {"too_few"}
    assert not validate_splat(write_splat_ply(g)).validator_ok


def test_mostly_transparent() -> None:
    g = good_splat()
    opacity = g.opacity.copy()
    opacity[: int(0.81 * len(g))] = -8.0  # sigmoid(-8) ~ 3e-4 < 1e-3
    assert failed_rules(replace(g, opacity=opacity)) == {"transparent"}
    opacity[: int(0.81 * len(g))] = -6.0  # sigmoid(-6) ~ 2.5e-3: visible enough for the validators
    assert failed_rules(replace(g, opacity=opacity)) == set()


def test_identity_rotations_even_unnormalised() -> None:
    g = good_splat()
    identity = np.tile(np.array([2.0, 0.0, 0.0, 0.0], dtype=np.float32), (len(g), 1))
    assert failed_rules(replace(g, rotations=identity)) == {"identity_rotations"}
    identity[0] = (0.0, 1.0, 0.0, 0.0)
    assert failed_rules(replace(g, rotations=identity)) == set()


def test_missing_field_and_garbage_are_unparsable() -> None:
    data = write_splat_ply(good_splat()).replace(b"property float opacity\n", b"")
    report = validate_splat(data)
    assert [f.rule for f in report.failures] == ["unparsable"] and not report.validator_ok
    assert validate_splat(b"\x00garbage").failures[0].rule == "unparsable"


@pytest.mark.parametrize("field", ["means", "f_dc", "opacity", "log_scales", "rotations"])
def test_non_finite_values(field: str) -> None:
    g = good_splat()
    values = getattr(g, field).copy()
    values.reshape(len(g), -1)[10, 0] = np.nan if field != "opacity" else np.inf
    assert "non_finite" in failed_rules(replace(g, **{field: values}))


def test_extent_and_centre() -> None:
    g = good_splat()
    assert failed_rules(replace(g, means=g.means * 1.5)) == {"extent"}
    assert failed_rules(replace(g, means=g.means + np.float32(0.2))) == {"off_centre"}


def test_floaters_flagged_only_when_checked() -> None:
    g = good_splat()
    means = g.means.copy()
    means[:3] = (0.9, 0.0, 0.0)  # a small isolated clump far outside the shell
    means -= 0.5 * (means.min(axis=0) + means.max(axis=0))
    means /= (means.max(axis=0) - means.min(axis=0)).max()
    data = write_splat_ply(replace(g, means=means))
    assert {f.rule for f in validate_splat(data).failures} == {"floaters"}
    assert validate_splat(data, check_floaters=False).ok


def test_header_comment_is_flagged() -> None:
    data = write_splat_ply(good_splat()).replace(b"element vertex", b"comment hi\nelement vertex", 1)
    assert {f.rule for f in validate_splat(data).failures} == {"header_comment"}
