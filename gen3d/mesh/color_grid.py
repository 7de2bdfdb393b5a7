"""A colour field from coloured surface samples: the bake source for meshes without a field to query.

TripoSR bakes from its triplane colour field. TRELLIS's mesh decoder instead colours the vertices
of its full-resolution FlexiCubes mesh (256^3), and decimation keeps only a few of them. To bake
the decimated mesh's texture, the full mesh's vertex colours become a field again: they are
averaged into the cells of a voxel grid over the samples' box, empty cells next to filled ones
take their neighbours' mean (so points that decimation moved off the original surface still find
colour), and a query reads the grid trilinearly, weighting cells by how many samples they hold.
"""

import torch
import torch.nn.functional as F

#: Cells per axis of the colour grid: the resolution of TRELLIS's mesh decoder.
GRID_RESOLUTION = 256
#: Rings of empty cells filled from filled neighbours: decimation at the default face counts moves
#: the surface by well under two cells of a 256 grid.
FILL_RINGS = 3


class ColorGrid:
    """Colours of points near a sampled surface.

    Args:
        sums: [R, R, R, 3] float32 colour sums per cell (already ring-filled).
        counts: [R, R, R] float32 sample weights per cell.
        low, high: [3] the grid's box corners; cell (i, j, k) spans low + (i..i+1) * (high - low) / R.
    """

    def __init__(self, sums: torch.Tensor, counts: torch.Tensor, low: torch.Tensor, high: torch.Tensor):
        self.sums, self.counts, self.low, self.high = sums, counts, low, high

    @classmethod
    def from_samples(
        cls,
        points: torch.Tensor,
        colors: torch.Tensor,
        resolution: int = GRID_RESOLUTION,
        rings: int = FILL_RINGS,
    ) -> "ColorGrid":
        """Average ``colors`` [N, 3] in [0, 1] of ``points`` [N, 3] into a resolution^3 grid on their device."""
        if points.dim() != 2 or points.shape[1] != 3 or colors.shape != points.shape:
            raise ValueError(f"points/colors: expected two [N, 3] tensors, got {tuple(points.shape)} and {tuple(colors.shape)}")
        if points.shape[0] == 0:
            raise ValueError("points: expected at least one coloured sample, got none")
        points, colors = points.float(), colors.float()
        pad = (points.amax(0) - points.amin(0)).max() / resolution
        low, high = points.amin(0) - pad, points.amax(0) + pad
        cells = _cell_index(points, low, high, resolution)
        flat = (cells[:, 0] * resolution + cells[:, 1]) * resolution + cells[:, 2]
        sums = torch.zeros(resolution**3, 3, device=points.device).index_add_(0, flat, colors)
        counts = torch.zeros(resolution**3, device=points.device).index_add_(0, flat, torch.ones_like(flat, dtype=torch.float32))
        shape = (resolution, resolution, resolution)
        sums, counts = _fill_rings(sums.reshape(*shape, 3), counts.reshape(shape), rings)
        return cls(sums, counts, low, high)

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """Colours [N, 3] in [0, 1] at ``points`` [N, 3]; 0.5 grey where no sample is near."""
        unit = (points.float() - self.low) / (self.high - self.low)
        # grid_sample's (x, y, z) index (W, H, D): our axes 2, 1, 0.
        grid = (unit * 2 - 1).flip(-1).reshape(1, -1, 1, 1, 3)
        volume = torch.cat([self.sums, self.counts[..., None]], dim=-1).permute(3, 0, 1, 2)[None]
        sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled = sampled.reshape(4, -1).T
        weight = sampled[:, 3:]
        return torch.where(weight > 1e-6, sampled[:, :3] / weight.clamp(min=1e-6), torch.full_like(sampled[:, :3], 0.5))


def _cell_index(points: torch.Tensor, low: torch.Tensor, high: torch.Tensor, resolution: int) -> torch.Tensor:
    """[N, 3] int64 cell of each point, clamped into the grid."""
    return ((points - low) / (high - low) * resolution).long().clamp(0, resolution - 1)


def _fill_rings(sums: torch.Tensor, counts: torch.Tensor, rings: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Give each empty cell next to filled ones their mean colour, ``rings`` times, with weight 1."""
    for _ in range(rings):
        filled = (counts > 0).float()
        means = sums / counts.clamp(min=1e-6)[..., None] * filled[..., None]
        stacked = torch.cat([means, filled[..., None]], dim=-1).permute(3, 0, 1, 2)[None]
        neighbours = F.avg_pool3d(stacked, kernel_size=3, stride=1, padding=1, count_include_pad=False)[0]
        neighbour_colour = neighbours[:3] / neighbours[3:].clamp(min=1e-6)
        grow = (counts == 0) & (neighbours[3] > 0)
        sums = torch.where(grow[..., None], neighbour_colour.permute(1, 2, 3, 0), sums)
        counts = torch.where(grow, torch.ones_like(counts), counts)
    return sums, counts
