"""Sparse attention (full, swin windows, cross) against the reference and per-segment softmax."""

import types

import pytest
import torch
import torch.nn.functional as F

from gen3d.models.trellis.sparse.attention import (
    SegmentLayout,
    SparseMultiHeadAttention,
    segment_self_attention,
    window_layout,
)
from gen3d.models.trellis.sparse.tensor import SparseTensor
from tests.models.trellis.reference import assert_parity, load_seeded, reference_outputs
from tests.models.trellis.sparse_cases import random_feats, shell_coords

SEED = 13
WIDTH, HEADS, CONTEXT = 32, 4, 24


def _inputs() -> dict[str, torch.Tensor]:
    coords = shell_coords(12, [3.0, 4.5], SEED)
    # Two copies of one item: the equal-length batch a sampler runs (cond + uncond).
    single = shell_coords(12, [4.0], SEED + 1)
    twin = torch.cat([single, single + torch.tensor([1, 0, 0, 0], dtype=torch.int32)])
    generator = torch.Generator().manual_seed(SEED)
    return {
        "coords": coords,
        "feats": random_feats(coords.shape[0], WIDTH, SEED),
        "twin_coords": twin,
        "twin_feats": random_feats(twin.shape[0], WIDTH, SEED + 1),
        "context": torch.randn(2, 7, CONTEXT, generator=generator),
    }


#: name -> (constructor keywords, our extra keywords, input prefix, cross)
CASES = {
    "full": ({"qk_rms_norm": True}, {}, "", False),
    "window": ({"attn_mode": "windowed", "window_size": 4, "shift_window": 0}, {}, "", False),
    "window_shifted": ({"attn_mode": "windowed", "window_size": 4, "shift_window": 2}, {}, "", False),
    "cross": ({"ctx_channels": CONTEXT, "type": "cross"}, {"cross": True}, "", True),
    "twin_full": ({"qk_rms_norm": True}, {}, "twin_", False),
    "twin_cross": ({"ctx_channels": CONTEXT, "type": "cross"}, {"cross": True}, "twin_", True),
}


def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    inputs = _inputs()
    outputs = {}
    for name, (keywords, _, prefix, cross) in CASES.items():
        module = load_seeded(ref.sparse.SparseMultiHeadAttention(WIDTH, HEADS, **keywords), SEED)
        x = ref.sparse.SparseTensor(feats=inputs[prefix + "feats"], coords=inputs[prefix + "coords"])
        outputs[name] = (module(x, inputs["context"]) if cross else module(x)).feats
    return outputs


def test_sparse_attention_matches_the_reference() -> None:
    inputs = _inputs()
    ours = {}
    for name, (keywords, extra, prefix, cross) in CASES.items():
        keywords = {key: value for key, value in keywords.items() if key != "type"} | extra
        module = load_seeded(SparseMultiHeadAttention(WIDTH, HEADS, **keywords), SEED)
        x = SparseTensor(inputs[prefix + "coords"], inputs[prefix + "feats"])
        with torch.no_grad():
            ours[name] = (module(x, inputs["context"]) if cross else module(x)).feats
    assert_parity(ours, reference_outputs("sparse_attention", _reference))


def _per_segment(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, order: torch.Tensor, lengths: list[int]
) -> torch.Tensor:
    out = torch.empty_like(q)
    for rows in order.split(lengths):
        heads = [t[rows].transpose(0, 1) for t in (q, k, v)]
        out[rows] = F.scaled_dot_product_attention(*heads).transpose(0, 1)
    return out


def test_padded_buckets_equal_softmax_per_segment() -> None:
    generator = torch.Generator().manual_seed(SEED)
    lengths = [1, 2, 3, 5, 7, 9, 12, 17, 30, 31, 33, 64, 2, 5]
    count = sum(lengths)
    order = torch.randperm(count, generator=generator)
    q, k, v = (torch.randn(count, HEADS, 8, generator=generator) for _ in range(3))
    layout = SegmentLayout.build(order, lengths)
    assert len(layout.buckets) > 1 and any(bucket.mask is not None for bucket in layout.buckets)
    torch.testing.assert_close(
        segment_self_attention(q, k, v, layout), _per_segment(q, k, v, order, lengths), rtol=1e-5, atol=1e-6
    )


def test_windows_hold_voxels_of_one_cell_and_are_built_once() -> None:
    inputs = _inputs()
    x = SparseTensor(inputs["coords"], inputs["feats"])
    first = SparseMultiHeadAttention(WIDTH, HEADS, attn_mode="windowed", window_size=4, shift_window=2)
    second = SparseMultiHeadAttention(WIDTH, HEADS, attn_mode="windowed", window_size=4, shift_window=2)
    with torch.no_grad():
        second(first(x))
    assert x.cache.builds[("windows", 4, (2, 2, 2))] == 1
    layout = window_layout(x, 4, 2)
    cells = torch.cat([x.coords[:, :1], torch.div(x.coords[:, 1:] + 2, 4, rounding_mode="floor")], dim=1)
    seen = torch.zeros(x.coords.shape[0], dtype=torch.long)
    assert len(layout.buckets) > 1
    for bucket in layout.buckets:
        real = torch.ones_like(bucket.rows, dtype=torch.bool) if bucket.mask is None else bucket.mask[:, 0, 0]
        for window, keep in zip(bucket.rows, real):
            rows = window[keep]
            assert (cells[rows] == cells[rows[0]]).all()
            seen[rows] += 1
    assert (seen == 1).all()


def test_precomputed_context_gives_the_same_cross_attention() -> None:
    inputs = _inputs()
    x = SparseTensor(inputs["coords"], inputs["feats"])
    module = load_seeded(SparseMultiHeadAttention(WIDTH, HEADS, CONTEXT, cross=True), SEED)
    with torch.no_grad():
        direct = module(x, inputs["context"]).feats
        cached = module(x, context_kv=module.project_context(inputs["context"])).feats
    assert torch.equal(direct, cached)


def test_windowed_cross_attention_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        SparseMultiHeadAttention(WIDTH, HEADS, cross=True, attn_mode="windowed", window_size=4)


def test_a_batch_item_without_voxels_is_skipped() -> None:
    inputs = _inputs()
    coords = inputs["coords"].clone()
    coords[:, 0] *= 2  # items 0 and 2; item 1 is empty
    module = load_seeded(SparseMultiHeadAttention(WIDTH, HEADS, CONTEXT, cross=True), SEED)
    context = torch.cat([inputs["context"][:1], torch.zeros_like(inputs["context"][:1]), inputs["context"][1:]])
    with torch.no_grad():
        gapped = module(SparseTensor(coords, inputs["feats"]), context).feats
        dense = module(SparseTensor(inputs["coords"], inputs["feats"]), inputs["context"]).feats
    torch.testing.assert_close(gapped, dense, rtol=1e-6, atol=1e-6)
