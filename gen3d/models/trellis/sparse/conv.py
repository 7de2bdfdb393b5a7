"""Submanifold sparse 3D convolution (spconv's ``SubMConv3d`` as TRELLIS wraps it) and a sparse linear.

A submanifold convolution keeps the input's voxels: output voxel p sums ``W[o] @ x[p + o - r]`` over
the kernel offsets o whose input voxel exists (r = kernel_size // 2). We find those inputs once per
coordinate set (a neighbour table, cached on the tensor), then gather ``[rows, K, C_in]`` blocks in
chunks and do one matmul per chunk against the kernel flattened to ``[C_out, K * C_in]``; the chunking
bounds memory at the millions of voxels the mesh decoder reaches.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .tensor import SparseTensor, linear_codes

#: Elements of one gathered ``[rows, K * C_in]`` chunk (512 MiB in bf16). On an H100, 2^28 ran a
#: 192 -> 96 conv over 1.9M voxels in 40 ms against 43 ms at 2^26: the gather bounds it either way.
GATHER_BUDGET = 1 << 28


def kernel_offsets(kernel_size: int, device: torch.device | None = None) -> torch.Tensor:
    """[K, 3] int64 offsets ``(dx, dy, dz)`` in spconv's kernel order (x slowest, z fastest).

    Kernel entry ``weight[:, i, j, l]`` reads the input voxel at ``p + (i, j, l) - kernel_size // 2``.
    """
    radius = kernel_size // 2
    axis = torch.arange(-radius, radius + 1, device=device)
    return torch.cartesian_prod(axis, axis, axis).reshape(-1, 3)


def neighbour_table(coords: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """For every voxel and kernel offset, the row of the input voxel it reads, or N where none exists.

    Args:
        coords: [N, 4] int (batch, x, y, z), unique rows.
        kernel_size: odd kernel width k.

    Returns:
        [N, k^3] int32 row indices into ``coords``; N marks a missing neighbour (a zero row).
    """
    count = coords.shape[0]
    radius = kernel_size // 2
    if count == 0:
        return torch.empty(0, kernel_size**3, dtype=torch.int32, device=coords.device)
    # Shift by the radius so every neighbour's coordinate stays in [0, extent): codes never wrap.
    shifted = coords.long()
    shifted = torch.cat([shifted[:, :1], shifted[:, 1:] + radius], dim=1)
    extent = int(shifted[:, 1:].max()) + radius + 1
    codes = linear_codes(shifted, extent)
    sorted_codes, order = torch.sort(codes)
    offsets = kernel_offsets(kernel_size, coords.device)
    deltas = (offsets[:, 0] * extent + offsets[:, 1]) * extent + offsets[:, 2]
    table = torch.empty(count, offsets.shape[0], dtype=torch.int32, device=coords.device)
    # One offset at a time: [N] queries, instead of an [N, K] int64 block for millions of voxels.
    for column, delta in enumerate(deltas.tolist()):
        query = codes + delta
        position = torch.searchsorted(sorted_codes, query).clamp_(max=count - 1)
        found = sorted_codes[position] == query
        table[:, column] = torch.where(found, order[position], count).to(torch.int32)
    return table


class SubmanifoldKernel(nn.Module):
    """The parameters of one convolution, named as spconv names them.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: k; ``weight`` is [C_out, k, k, k, C_in] (spconv's layout), ``bias`` [C_out].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, kernel_size, kernel_size, kernel_size, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.weight[0].numel()
        bound = 1 / math.sqrt(fan_in) if fan_in else 0
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)


class SparseConv3d(nn.Module):
    """Submanifold 3D convolution, stride 1: the output has the input's voxels.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: odd k (TRELLIS uses 3 and 1).
        bias: learn a bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (submanifold convolution), got {kernel_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.conv = SubmanifoldKernel(in_channels, out_channels, kernel_size, bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        """[N, C_in] features -> [N, C_out] on the same voxels."""
        if self.kernel_size == 1:
            # spconv multiplies a 1^3 kernel as ``feats @ weight.view(C_in, C_out)``: the stored
            # [C_out, 1, 1, 1, C_in] memory read as [C_in, C_out], not its transpose. TRELLIS was
            # trained through that path, so its 1^3 weights only mean something read this way.
            matrix = self.conv.weight.reshape(self.in_channels, self.out_channels)
            return x.replace(F.linear(x.feats, matrix.t(), self.conv.bias))
        weight = self.conv.weight.reshape(self.out_channels, -1)
        table = x.cache.get_or_build(
            ("neighbours", self.kernel_size), lambda: neighbour_table(x.coords, self.kernel_size)
        )
        return x.replace(gather_conv(x.feats, table, weight, self.conv.bias))


def gather_conv(
    feats: torch.Tensor, table: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Convolution as gathered matmuls, in row chunks of at most ``GATHER_BUDGET`` elements.

    Args:
        feats: [N, C_in].
        table: [N, K] rows to read per kernel offset (N: missing, reads zeros).
        weight: [C_out, K * C_in], offset-major.
        bias: [C_out] or None.

    Returns:
        [N, C_out] in the features' dtype.
    """
    count, channels = feats.shape
    kernel = table.shape[1]
    padded = torch.cat([feats, feats.new_zeros(1, channels)])
    out = feats.new_empty(count, weight.shape[0])
    flat = table.reshape(-1)
    step = max(1, GATHER_BUDGET // (kernel * channels))
    for start in range(0, count, step):
        stop = min(count, start + step)
        gathered = torch.index_select(padded, 0, flat[start * kernel : stop * kernel])
        out[start:stop] = F.linear(gathered.reshape(stop - start, kernel * channels), weight, bias)
    return out


class SparseLinear(nn.Linear):
    """``nn.Linear`` on a sparse tensor's features (keys ``weight``, ``bias``)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))
