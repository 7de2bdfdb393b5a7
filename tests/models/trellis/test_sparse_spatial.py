"""Sparse pooling, unpooling, subdivision and group norm against the reference's modules."""

import types

import pytest
import torch

from gen3d.models.trellis.sparse.conv import SparseConv3d
from gen3d.models.trellis.sparse.norm import SparseGroupNorm32
from gen3d.models.trellis.sparse.spatial import (
    SparseDownsample,
    SparseSubdivide,
    SparseUpsample,
    conv_subdivided,
)
from gen3d.models.trellis.sparse.tensor import SparseTensor
from tests.models.trellis.reference import assert_parity, load_seeded, reference_outputs
from tests.models.trellis.sparse_cases import random_feats, shell_coords

SEED = 12
#: Channels pooled and subdivided (the group norm sees all 64): keeps the recording small.
NARROW = 8


def _input() -> SparseTensor:
    coords = shell_coords(11, [3.0, 4.0], SEED)
    return SparseTensor(coords, random_feats(coords.shape[0], 64, SEED))


def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    x = _input()
    sparse = ref.sparse.SparseTensor(feats=x.feats, coords=x.coords)
    narrow = ref.sparse.SparseTensor(feats=x.feats[:, :NARROW], coords=x.coords)
    pooled = ref.sparse.SparseDownsample(2)(narrow)
    unpooled = ref.sparse.SparseUpsample(2)(pooled * 3.0)
    subdivided = ref.sparse.SparseSubdivide()(narrow)
    normed = load_seeded(ref.sparse.SparseGroupNorm32(32, 64), SEED)(sparse)
    return {
        "pooled_coords": pooled.coords,
        "pooled": pooled.feats,
        "unpooled_coords": unpooled.coords,
        "unpooled": unpooled.feats,
        "subdivided_coords": subdivided.coords,
        "subdivided": subdivided.feats,
        "group_norm": normed.feats,
    }


def test_spatial_ops_match_the_reference() -> None:
    x = _input()
    narrow = x.replace(x.feats[:, :NARROW])
    pooled = SparseDownsample(2)(narrow)
    unpooled = SparseUpsample(2)(pooled * 3.0)
    subdivided = SparseSubdivide()(narrow)
    with torch.no_grad():
        normed = load_seeded(SparseGroupNorm32(32, 64), SEED)(x)
    ours = {
        "pooled_coords": pooled.coords,
        "pooled": pooled.feats,
        "unpooled_coords": unpooled.coords,
        "unpooled": unpooled.feats,
        "subdivided_coords": subdivided.coords,
        "subdivided": subdivided.feats,
        "group_norm": normed.feats,
    }
    assert_parity(ours, reference_outputs("sparse_spatial", _reference))


def test_pooling_divides_by_children_plus_one() -> None:
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1], [0, 2, 0, 0]], dtype=torch.int32)
    pooled = SparseDownsample(2)(SparseTensor(coords, torch.tensor([[2.0], [4.0], [6.0]])))
    assert pooled.coords.tolist() == [[0, 0, 0, 0], [0, 1, 0, 0]]
    assert pooled.feats.flatten().tolist() == [2.0, 3.0]


def test_unpooling_returns_to_the_original_voxels_and_their_cache() -> None:
    x = _input()
    conv = SparseConv3d(64, 64, 3)
    with torch.no_grad():
        conv(x)
        pooled = SparseDownsample(2)(x)
        again = SparseDownsample(2)(x.replace(x.feats + 1))
        restored = SparseUpsample(2)(pooled)
        conv(restored)
    assert again.cache is pooled.cache
    assert restored.coords is x.coords and restored.cache is x.cache
    assert x.cache.builds[("downsample", 2)] == 1
    assert x.cache.builds[("neighbours", 3)] == 1


def test_unpooling_needs_a_pooled_tensor() -> None:
    with pytest.raises(ValueError, match="SparseDownsample"):
        SparseUpsample(2)(_input())


def test_subdividing_twice_shares_one_coordinate_set() -> None:
    x = _input()
    first, second = SparseSubdivide()(x), SparseSubdivide()(x.replace(x.feats * 2))
    assert first.coords is second.coords and first.cache is second.cache
    assert torch.equal(first.coords[:8, 1:] // 2, x.coords[:1, 1:].expand(8, 3))


def test_group_norm_keeps_bf16_and_normalises_each_item() -> None:
    x = _input()
    norm = SparseGroupNorm32(32, 64).eval()
    out = norm(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    for item in out.feats.float().split(x.batch_lengths):
        grouped = item.reshape(item.shape[0], 32, 2)
        assert grouped.mean(dim=(0, 2)).abs().max() < 2e-2
        assert (grouped.var(dim=(0, 2), unbiased=False) - 1).abs().max() < 3e-2


def test_convolving_a_subdivision_equals_convolving_the_children() -> None:
    x = _input()
    narrow = x.replace(x.feats[:, :NARROW])
    conv = load_seeded(SparseConv3d(NARROW, 5, 3), SEED)
    with torch.no_grad():
        children = SparseSubdivide()(narrow)
        expected = conv(children).feats
        got = conv_subdivided(conv, narrow)
    assert got.coords is children.coords and got.cache is children.cache
    torch.testing.assert_close(got.feats, expected, rtol=1e-5, atol=1e-5)
