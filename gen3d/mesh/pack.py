"""Shelf packing of chart rectangles into a square atlas, at the largest scale that fits.

Rectangles are sorted by height and laid left to right on shelves; each shelf is found with one
``searchsorted`` over the running widths, so the cost is per shelf, not per rectangle. The scale
(texels per world unit) is found by bisection: every rectangle grows with the scale except its
fixed gutter, so "fits" is monotone in the scale. With few large charts, which way they lie
decides how many fit a shelf, so the packing is tried with every rectangle as given and with
every rectangle turned by 90 degrees, and the larger scale wins.
"""

from dataclasses import dataclass

import numpy as np

#: Bisection steps on the scale: 2^-16 relative precision.
BISECTION_STEPS = 16


@dataclass(frozen=True)
class Packing:
    """Where each rectangle goes.

    Attributes:
        offsets: (N, 2) float64 texel position (x right, y down) of each rectangle's content corner.
        scale: texels per world unit applied to every rectangle.
        turned: whether the rectangles were packed turned (width and height swapped).
    """

    offsets: np.ndarray
    scale: float
    turned: bool = False


def shelf_pack(widths: np.ndarray, heights: np.ndarray, side: float) -> tuple[np.ndarray, float] | None:
    """Shelf-pack rectangles (N,) into a strip ``side`` wide.

    Returns:
        (corners (N, 2) float64 top-left positions, total height), or None when a rectangle is
        wider than the strip.
    """
    if len(widths) and widths.max() > side:
        return None
    order = np.argsort(-heights, kind="stable")
    running = np.cumsum(widths[order])
    corners = np.zeros((len(widths), 2))
    start, top = 0, 0.0
    while start < len(order):
        before = running[start - 1] if start else 0.0
        stop = int(np.searchsorted(running, before + side, side="right"))
        row = order[start:stop]
        corners[row, 0] = running[start:stop] - widths[row] - before
        corners[row, 1] = top
        top += heights[order[start]]  # the tallest of the shelf comes first
        start = stop
    return corners, top


def pack_rectangles(sizes: np.ndarray, side: int, gutter: float) -> Packing:
    """The better of ``pack_at_largest_scale`` (same arguments) as given and with all turned by 90°.

    Returns:
        ``Packing``; when ``turned``, its offsets are for the (height, width) rectangles.
    """
    upright = pack_at_largest_scale(sizes, side, gutter)
    turned = pack_at_largest_scale(sizes[:, ::-1], side, gutter)
    return Packing(turned.offsets, turned.scale, turned=True) if turned.scale > upright.scale else upright


def pack_at_largest_scale(sizes: np.ndarray, side: int, gutter: float) -> Packing:
    """Scale rectangles uniformly as much as possible and shelf-pack them into a ``side``² square.

    Args:
        sizes: (N, 2) float64 content widths and heights, world units (> 0).
        side: atlas side in texels.
        gutter: texels left empty between neighbouring contents (and to the atlas border, half).

    Returns:
        ``Packing`` with each content's texel offset; contents lie in [gutter/2, side - gutter/2].

    Raises:
        ValueError: the gutters alone do not fit in the atlas.
    """
    content = np.maximum(sizes, 1e-12)
    area = float((content[:, 0] * content[:, 1]).sum())
    low, high = 0.0, side / np.sqrt(area)  # the contents alone cannot exceed the atlas area

    def attempt(scale: float) -> tuple[np.ndarray, float] | None:
        # Whole-texel boxes (and an even gutter) keep every content corner on a texel boundary.
        boxes = np.ceil(content * scale) + gutter
        packed = shelf_pack(boxes[:, 0], boxes[:, 1], float(side))
        return packed if packed is not None and packed[1] <= side else None

    best = attempt(low)
    if best is None:
        raise ValueError(f"gutter: {len(sizes)} charts with a {gutter}-texel gutter do not fit a {side}^2 atlas")
    for _ in range(BISECTION_STEPS):
        middle = 0.5 * (low + high)
        packed = attempt(middle)
        if packed is None:
            high = middle
        else:
            low, best = middle, packed
    return Packing(offsets=best[0] + 0.5 * gutter, scale=low)
