"""Group norm over each batch item's voxels (TRELLIS's ``SparseGroupNorm32``)."""

import torch
from torch import nn

from .tensor import SparseTensor


class SparseGroupNorm32(nn.GroupNorm):
    """GroupNorm of a sparse tensor: statistics per batch item and channel group, over all its voxels.

    Computed in float32 and returned in the input's dtype. Keys ``weight``, ``bias`` as ``nn.GroupNorm``.
    """

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        """[N, C] -> [N, C] on the same voxels."""
        feats = x.feats.float()
        count, channels = feats.shape
        if channels != self.num_channels:
            raise ValueError(f"x must have {self.num_channels} channels, got {channels}")
        grouped = feats.reshape(count, self.num_groups, channels // self.num_groups)
        # A few batch items at most: one reduction each, then one vectorised normalisation.
        stats = [torch.var_mean(item, dim=(0, 2), unbiased=False) for item in grouped.split(x.batch_lengths)]
        variance = torch.stack([var for var, _ in stats])
        mean = torch.stack([mean for _, mean in stats])
        scale = torch.rsqrt(variance + self.eps)
        normed = (grouped - x.per_row(mean).unsqueeze(-1)) * x.per_row(scale).unsqueeze(-1)
        normed = normed.reshape(count, channels)
        if self.affine:
            normed = normed * self.weight.float() + self.bias.float()
        return x.replace(normed.to(x.dtype))
