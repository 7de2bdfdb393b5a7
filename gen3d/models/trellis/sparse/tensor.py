"""A sparse voxel tensor: integer coordinates, one feature row per voxel, and a cache of maps.

TRELLIS's sparse networks run many layers over one voxel set: every convolution needs the same
neighbour map, every windowed attention block the same window partition, and the flow sampler feeds
the same coordinates through the whole network at each of its steps. So each ``SparseTensor`` holds a
``SpatialCache``, shared by every tensor derived from it with ``replace`` or arithmetic, and each map
is built once per coordinate set, keyed by what it is for.
"""

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

import torch

T = TypeVar("T")


class SpatialCache:
    """Maps derived from one coordinate set (neighbour tables, window partitions, pooling maps).

    Entries are built on first use by ``get_or_build`` and shared by every tensor with these
    coordinates. ``builds`` counts how often each key was built, so tests can check reuse.
    """

    def __init__(self) -> None:
        self._entries: dict[Hashable, object] = {}
        self.builds: dict[Hashable, int] = {}

    def get_or_build(self, key: Hashable, build: Callable[[], T]) -> T:
        """The entry for ``key``, calling ``build()`` only the first time."""
        if key not in self._entries:
            self._entries[key] = build()
            self.builds[key] = self.builds.get(key, 0) + 1
        return self._entries[key]  # type: ignore[return-value]

    def get(self, key: Hashable) -> object | None:
        """The entry for ``key``, or None when it was never built."""
        return self._entries.get(key)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries


@dataclass(frozen=True, eq=False)
class SparseTensor:
    """Features on the occupied voxels of a batch of grids.

    Attributes:
        coords: [N, 4] int32 rows ``(batch, x, y, z)``; rows of one batch item are contiguous and
            batch items come in order 0, 1, ...
        feats: [N, ...] features, row i belongs to voxel ``coords[i]``.
        cache: maps derived from ``coords``; shared by tensors made with ``replace`` and arithmetic.
    """

    coords: torch.Tensor
    feats: torch.Tensor
    cache: SpatialCache = field(default_factory=SpatialCache, repr=False)

    def __post_init__(self) -> None:
        if self.coords.dim() != 2 or self.coords.shape[1] != 4:
            raise ValueError(f"coords must be [N, 4] (batch, x, y, z), got {tuple(self.coords.shape)}")
        if self.coords.dtype != torch.int32:
            raise ValueError(f"coords must be int32, got {self.coords.dtype}")
        if self.feats.shape[0] != self.coords.shape[0]:
            raise ValueError(
                f"feats must have one row per voxel ({self.coords.shape[0]}), got {tuple(self.feats.shape)}"
            )

    # ---- metadata -------------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def batch_index(self) -> torch.Tensor:
        """[N] int64 batch item of every row (cached)."""
        return self.cache.get_or_build("batch_index", lambda: self.coords[:, 0].long())

    @property
    def batch_lengths(self) -> list[int]:
        """Rows per batch item, in batch order (cached; one host sync per coordinate set)."""

        def count() -> list[int]:
            if self.coords.shape[0] == 0:
                return []
            return torch.bincount(self.batch_index).tolist()

        return self.cache.get_or_build("batch_lengths", count)

    @property
    def shape(self) -> torch.Size:
        """[batch size, *feature shape], as the reference's sparse tensor reports it (samplers read
        the batch size from ``shape[0]``, for dense and sparse states alike)."""
        return torch.Size([self.batch_size, *self.feats.shape[1:]])

    @property
    def batch_size(self) -> int:
        return len(self.batch_lengths)

    def per_row(self, values: torch.Tensor) -> torch.Tensor:
        """Broadcast per-item values [B, ...] to rows [N, ...] by each row's batch index."""
        if values.shape[0] == 1:
            return values.expand(self.coords.shape[0], *values.shape[1:])
        return values[self.batch_index]

    def per_item(self, op: Callable[..., torch.Tensor], feats: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
        """``op(feats, *values)`` with per-item values [B, C] broadcast over each item's rows [N, C].

        One item, or items of equal length (a sampler's cond + uncond batch), broadcast without
        materialising [N, C] copies of the values; otherwise the values are gathered per row.
        """
        lengths = self.batch_lengths
        if len(lengths) == 1:
            return op(feats, *values)
        if len(set(lengths)) == 1:
            items = feats.reshape(len(lengths), lengths[0], *feats.shape[1:])
            return op(items, *[value.unsqueeze(1) for value in values]).reshape(feats.shape[0], *feats.shape[1:])
        return op(feats, *[self.per_row(value) for value in values])

    # ---- derived tensors ------------------------------------------------------------------------

    def replace(self, feats: torch.Tensor) -> "SparseTensor":
        """The same voxels (and cache) with new features [N, ...]."""
        return SparseTensor(self.coords, feats, self.cache)

    def to(self, dtype: torch.dtype) -> "SparseTensor":
        """Features cast to ``dtype`` (coordinates and cache kept)."""
        return self if self.feats.dtype == dtype else self.replace(self.feats.to(dtype))

    def repeat_batch(self, times: int) -> "SparseTensor":
        """The batch repeated ``times`` over (items ``b, b + B, ...`` equal), e.g. cond + uncond.

        The repeated coordinates and their cache are themselves cached here, so a sampler calling
        this at every step keeps one coordinate set and builds its maps once.
        """

        def build() -> tuple[torch.Tensor, SpatialCache]:
            batch = self.batch_size
            offsets = torch.arange(times, device=self.coords.device, dtype=torch.int32) * batch
            tiled = self.coords.repeat(times, 1)
            tiled[:, 0] += offsets.repeat_interleave(self.coords.shape[0])
            return tiled, SpatialCache()

        coords, cache = self.cache.get_or_build(("repeat_batch", times), build)
        return SparseTensor(coords, self.feats.repeat(times, *([1] * (self.feats.dim() - 1))), cache)

    def _operand(self, other: "SparseTensor | torch.Tensor | float") -> "torch.Tensor | float":
        if isinstance(other, SparseTensor):
            if other.coords.shape != self.coords.shape:
                raise ValueError(
                    f"other must have the same voxels ({self.coords.shape[0]}), got {other.coords.shape[0]}"
                )
            return other.feats
        return other

    def __add__(self, other: "SparseTensor | torch.Tensor | float") -> "SparseTensor":
        return self.replace(self.feats + self._operand(other))

    __radd__ = __add__

    def __sub__(self, other: "SparseTensor | torch.Tensor | float") -> "SparseTensor":
        return self.replace(self.feats - self._operand(other))

    def __rsub__(self, other: "torch.Tensor | float") -> "SparseTensor":
        return self.replace(other - self.feats)

    def __mul__(self, other: "SparseTensor | torch.Tensor | float") -> "SparseTensor":
        return self.replace(self.feats * self._operand(other))

    __rmul__ = __mul__

    def __truediv__(self, other: "SparseTensor | torch.Tensor | float") -> "SparseTensor":
        return self.replace(self.feats / self._operand(other))

    def __neg__(self) -> "SparseTensor":
        return self.replace(-self.feats)


def linear_codes(coords: torch.Tensor, extent: int) -> torch.Tensor:
    """Lexicographic int64 codes of (batch, x, y, z) rows whose spatial values lie in [0, extent).

    Sorting by code sorts rows by batch, then x, then y, then z.

    Args:
        coords: [N, 4] integer rows.
        extent: exclusive bound of every spatial coordinate.

    Returns:
        [N] int64.
    """
    c = coords.long()
    return ((c[:, 0] * extent + c[:, 1]) * extent + c[:, 2]) * extent + c[:, 3]
