"""Sparse voxel tensors and the layers TRELLIS runs on them, in plain PyTorch.

``SparseTensor`` (tensor.py) carries coordinates, features and a cache of coordinate-derived maps;
conv.py has the submanifold convolution, spatial.py pooling and subdivision, attention.py full,
windowed and cross attention over voxel segments, norm.py the per-item group norm.
"""

from .attention import SparseMultiHeadAttention
from .conv import SparseConv3d, SparseLinear
from .norm import SparseGroupNorm32
from .spatial import SparseDownsample, SparseSubdivide, SparseUpsample
from .tensor import SparseTensor, SpatialCache

__all__ = [
    "SparseConv3d",
    "SparseDownsample",
    "SparseGroupNorm32",
    "SparseLinear",
    "SparseMultiHeadAttention",
    "SparseSubdivide",
    "SparseTensor",
    "SparseUpsample",
    "SpatialCache",
]
