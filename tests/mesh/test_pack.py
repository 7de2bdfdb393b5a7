"""Shelf packing: no overlaps, gutters kept, inside the atlas, at (close to) the largest scale."""

import numpy as np
import pytest

from gen3d.mesh.pack import pack_at_largest_scale, pack_rectangles, shelf_pack


def overlaps(lo: np.ndarray, hi: np.ndarray) -> int:
    """Number of pairs of boxes [lo, hi) that intersect with positive area."""
    inter = np.minimum(hi[:, None], hi[None]) - np.maximum(lo[:, None], lo[None])
    pairs = (inter > 1e-9).all(axis=2)
    np.fill_diagonal(pairs, False)
    return int(pairs.sum() // 2)


def test_shelf_pack_places_disjoint_rectangles_within_the_strip() -> None:
    rng = np.random.default_rng(0)
    widths, heights = rng.uniform(1, 30, 200), rng.uniform(1, 30, 200)
    corners, height = shelf_pack(widths, heights, 100.0)
    sizes = np.stack([widths, heights], axis=1)
    assert overlaps(corners, corners + sizes) == 0
    assert corners.min() >= 0 and (corners[:, 0] + widths).max() <= 100.0 + 1e-9
    assert (corners[:, 1] + heights).max() == pytest.approx(height)
    assert shelf_pack(np.array([101.0]), np.array([1.0]), 100.0) is None


@pytest.mark.parametrize("count", [1, 6, 40, 300])
def test_packing_keeps_gutters_inside_the_atlas(count: int) -> None:
    rng = np.random.default_rng(count)
    sizes = rng.uniform(0.05, 1.0, (count, 2))
    side, gutter = 512, 4
    packing = pack_rectangles(sizes, side, gutter)
    placed = sizes[:, ::-1] if packing.turned else sizes
    content = np.ceil(placed * packing.scale)
    lo, hi = packing.offsets, packing.offsets + content
    assert lo.min() >= gutter / 2 and hi.max() <= side - gutter / 2 + 1e-9
    # Grown by half a gutter on each side, contents still do not touch: the gutter is kept.
    assert overlaps(lo - gutter / 2 + 1e-6, hi + gutter / 2 - 1e-6) == 0
    # The scale is the largest that fits, to the bisection's precision.
    boxes = np.ceil(placed * packing.scale * 1.01) + gutter
    packed = shelf_pack(boxes[:, 0], boxes[:, 1], float(side))
    assert packed is None or packed[1] > side


def test_the_orientation_with_the_larger_scale_wins() -> None:
    # A tall 1 x 3 forces a tall first shelf upright; turned, every shelf is one unit high.
    sizes = np.array([[1.0, 1.0], [3.0, 1.0], [1.0, 3.0], [2.0, 1.0]])
    upright = pack_at_largest_scale(sizes, 300, 2)
    turned = pack_at_largest_scale(sizes[:, ::-1], 300, 2)
    assert turned.scale > 1.1 * upright.scale
    best = pack_rectangles(sizes, 300, 2)
    assert best.turned and best.scale == turned.scale
    assert not pack_rectangles(sizes[:, ::-1], 300, 2).turned


def test_too_many_gutters_fail_clearly() -> None:
    with pytest.raises(ValueError, match="gutter"):
        pack_rectangles(np.ones((5000, 2)), 64, 8)
