"""Submanifold sparse convolution against spconv (through the reference's wrapper) and a dense conv."""

import types

import torch
import torch.nn.functional as F

from gen3d.models.trellis.sparse import conv as conv_module
from gen3d.models.trellis.sparse.conv import SparseConv3d, SparseLinear, neighbour_table
from gen3d.models.trellis.sparse.tensor import SparseTensor
from tests.models.trellis.reference import assert_parity, load_seeded, reference_outputs
from tests.models.trellis.sparse_cases import (
    random_feats,
    shell_coords,
    single_threaded,
)

SEED = 11


def _input() -> SparseTensor:
    coords = shell_coords(10, [2.5, 3.5], SEED)
    return SparseTensor(coords, random_feats(coords.shape[0], 6, SEED))


@single_threaded
def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    x = _input()
    sparse = ref.sparse.SparseTensor(feats=x.feats, coords=x.coords)
    return {
        "kernel3": load_seeded(ref.sparse.SparseConv3d(6, 5, 3), SEED)(sparse).feats,
        "kernel1": load_seeded(ref.sparse.SparseConv3d(6, 5, 1), SEED)(sparse).feats,
        "linear": load_seeded(ref.sparse.SparseLinear(6, 5), SEED)(sparse).feats,
    }


def test_convolutions_match_spconv() -> None:
    x = _input()
    with torch.no_grad():
        ours = {
            "kernel3": load_seeded(SparseConv3d(6, 5, 3), SEED)(x).feats,
            "kernel1": load_seeded(SparseConv3d(6, 5, 1), SEED)(x).feats,
            "linear": load_seeded(SparseLinear(6, 5), SEED)(x).feats,
        }
    assert_parity(ours, reference_outputs("sparse_conv", _reference))


def test_keys_use_spconv_layout() -> None:
    shapes = {name: tuple(value.shape) for name, value in SparseConv3d(6, 5, 3).state_dict().items()}
    assert shapes == {"conv.weight": (5, 3, 3, 3, 6), "conv.bias": (5,)}


def test_kernel3_equals_a_dense_convolution_sampled_at_the_voxels() -> None:
    x = _input()
    conv = load_seeded(SparseConv3d(6, 5, 3), SEED)
    batch = x.batch_size
    dense = torch.zeros(batch, 6, 10, 10, 10)
    b, i, j, k = x.coords.long().unbind(1)
    dense[b, :, i, j, k] = x.feats
    # spconv's [out, kx, ky, kz, in] kernel is a cross-correlation kernel over (x, y, z).
    weight = conv.conv.weight.permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        expected = F.conv3d(dense, weight, conv.conv.bias, padding=1)[b, :, i, j, k]
        got = conv(x).feats
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_chunked_gather_gives_the_same_result(monkeypatch) -> None:
    x = _input()
    conv = load_seeded(SparseConv3d(6, 5, 3), SEED)
    with torch.no_grad():
        whole = conv(x).feats
        monkeypatch.setattr(conv_module, "GATHER_BUDGET", 27 * 6 * 7)  # 7 rows per chunk
        chunked = conv(x.replace(x.feats.clone())).feats
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_neighbour_table_is_built_once_per_coordinate_set() -> None:
    x = _input()
    first, second = SparseConv3d(6, 6, 3), SparseConv3d(6, 6, 3)
    with torch.no_grad():
        y = second(first(x))
        second(y * 2.0 - 1.0)
    assert x.cache is y.cache
    assert x.cache.builds == {("neighbours", 3): 1}


def test_neighbour_table_marks_missing_neighbours() -> None:
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 2], [1, 1, 1, 1]], dtype=torch.int32)
    table = neighbour_table(coords, 3)
    centre, plus_z = 13, 14
    assert table[:, centre].tolist() == [0, 1, 2]
    # Voxel 0's +z neighbour is voxel 1; item 1's voxel at the same place has no such neighbour.
    assert table[:, plus_z].tolist() == [1, 3, 3]
    assert int((table < 3).sum()) == 5
