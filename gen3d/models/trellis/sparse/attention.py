"""Multi-head attention over sparse voxels: full (per batch item), windowed (swin) and cross.

Attention runs over *segments* of rows: a batch item's voxels (full and cross attention) or the
voxels of one window (swin). Segments differ in length, so ``SegmentLayout`` groups them into a few
buckets of similar length, pads each bucket to its longest segment and runs one batched SDPA call
per bucket with a key-padding mask; a bucket of equal-length segments needs no mask (TRELLIS's flow
runs condition and uncondition as two equal items: one dense SDPA call). The layout depends only on
the coordinates, so it is cached on the tensor and built once per coordinate set.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..layers import MultiHeadAttention
from .tensor import SparseTensor, linear_codes

#: Segments are bucketed by exact length while they have at most this many distinct lengths,
#: else by the next power of two (so padding at most doubles a segment).
MAX_EXACT_BUCKETS = 8
#: Padded buckets are this many tokens wide at a multiple.
MASK_ALIGNMENT = 8


@dataclass(frozen=True)
class _Bucket:
    """Segments attended together.

    Attributes:
        rows: [S, L] int64 row of each token (padding reads row 0, masked out), or None: the rows
            are the whole input in order, so ``[N] -> [S, L]`` is a reshape.
        mask: [S, 1, 1, L] bool key mask (True = real token), or None without padding.
        flat: [R] int64 positions of the real tokens in the flattened [S * L], or None without padding.
        targets: [R] int64 input row of each real token.
        segments: [S] int64 segment id (the batch item, for cross attention).
    """

    rows: torch.Tensor | None
    mask: torch.Tensor | None
    flat: torch.Tensor | None
    targets: torch.Tensor
    segments: torch.Tensor


@dataclass(frozen=True)
class SegmentLayout:
    """Rows split into segments and bucketed for batched attention (see the module docstring)."""

    count: int
    buckets: tuple[_Bucket, ...]

    @classmethod
    def build(
        cls, order: torch.Tensor, lengths: Sequence[int], segment_ids: Sequence[int] | None = None
    ) -> "SegmentLayout":
        """Layout of segments given as consecutive runs of ``order``.

        Args:
            order: [N] int64 rows, segment after segment.
            lengths: length of each segment, summing to N; empty segments (a batch item without
                voxels) are dropped.
            segment_ids: id of each segment (default 0, 1, ...).
        """
        device = order.device
        segment_ids = list(segment_ids) if segment_ids is not None else list(range(len(lengths)))
        kept = [(index, length) for index, length in zip(segment_ids, lengths) if length > 0]
        ids = torch.tensor([index for index, _ in kept], dtype=torch.long, device=device)
        lengths_t = torch.tensor([length for _, length in kept], dtype=torch.long, device=device)
        keys = torch.tensor(_bucket_keys([length for _, length in kept]), device=device)
        # Segment and position inside it of every entry of ``order``.
        segment_of = torch.repeat_interleave(torch.arange(len(kept), device=device), lengths_t)
        position = torch.arange(order.shape[0], device=device) - (torch.cumsum(lengths_t, 0) - lengths_t)[segment_of]
        whole = bool(torch.equal(order, torch.arange(order.shape[0], device=device)))
        buckets = []
        for key in torch.unique(keys).tolist():
            members = torch.nonzero(keys == key).squeeze(1)
            if whole and members.shape[0] == len(kept) and bool((lengths_t == lengths_t[0]).all()):
                buckets.append(_Bucket(None, None, None, order, ids))
            else:
                buckets.append(_padded_bucket(order, members, ids, lengths_t, segment_of, position))
        return cls(order.shape[0], tuple(buckets))


def _bucket_keys(lengths: list[int]) -> list[int]:
    """Bucket of each segment: its length while few lengths occur, else the next power of two."""
    if len(set(lengths)) <= MAX_EXACT_BUCKETS:
        return list(lengths)
    return [1 << (length - 1).bit_length() for length in lengths]


def _padded_bucket(
    order: torch.Tensor,
    members: torch.Tensor,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    segment_of: torch.Tensor,
    position: torch.Tensor,
) -> _Bucket:
    """The bucket of segments ``members``: an [S, L] gather table, and a key mask if lengths differ."""
    device = order.device
    count = members.shape[0]
    width = int(lengths[members].max())
    uniform = bool((lengths[members] == width).all())
    if not uniform:
        # Fused attention kernels want the mask's last dimension aligned.
        width = -(-width // MASK_ALIGNMENT) * MASK_ALIGNMENT
    local = torch.full(lengths.shape, -1, dtype=torch.long, device=device)
    local[members] = torch.arange(count, device=device)
    chosen = local[segment_of] >= 0
    flat = local[segment_of][chosen] * width + position[chosen]
    targets = order[chosen]
    # Padding reads row 0: masked as a key, and dropped as a query by _scatter.
    rows = torch.zeros(count * width, dtype=torch.long, device=device)
    rows[flat] = targets
    rows = rows.reshape(count, width)
    if uniform:
        return _Bucket(rows, None, None, targets, ids[members])
    mask = torch.zeros(count * width, dtype=torch.bool, device=device)
    mask[flat] = True
    return _Bucket(rows, mask.reshape(count, 1, 1, width), flat, targets, ids[members])


def batch_layout(x: SparseTensor) -> SegmentLayout:
    """One segment per batch item (cached on ``x``)."""

    def build() -> SegmentLayout:
        order = torch.arange(x.coords.shape[0], device=x.device)
        return SegmentLayout.build(order, x.batch_lengths)

    return x.cache.get_or_build("batch_segments", build)


def window_layout(x: SparseTensor, window_size: int, shift: int | tuple[int, int, int] = 0) -> SegmentLayout:
    """One segment per occupied window (cached on ``x``).

    Voxel (b, p) falls in window ``(b, (p + shift) // window_size)`` per axis, as in TRELLIS's swin
    attention; windows are ordered by (batch, wx, wy, wz), which does not change the result.
    """
    shifts = (shift,) * 3 if isinstance(shift, int) else tuple(shift)

    def build() -> SegmentLayout:
        offset = torch.as_tensor(shifts, dtype=torch.int64, device=x.device)
        windows = torch.div(x.coords[:, 1:].long() + offset, window_size, rounding_mode="floor")
        cells = torch.cat([x.coords[:, :1].long(), windows], dim=1)
        codes = linear_codes(cells, int(windows.max()) + 1)
        order = torch.argsort(codes, stable=True)
        _, lengths = torch.unique_consecutive(codes[order], return_counts=True)
        return SegmentLayout.build(order, lengths.tolist())

    return x.cache.get_or_build(("windows", window_size, shifts), build)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """SDPA on [S, L, H, D] queries and [S, M, H, D] keys/values -> [S, L, H, D]."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def _gather(values: torch.Tensor, bucket: _Bucket) -> torch.Tensor:
    """[N, ...] rows -> [S, L, ...] tokens of ``bucket`` (padding repeats row 0, see ``_Bucket``)."""
    if bucket.rows is None:
        return values.reshape(bucket.segments.shape[0], -1, *values.shape[1:])
    return values[bucket.rows]


def _scatter(out: torch.Tensor, result: torch.Tensor, bucket: _Bucket) -> None:
    """Write ``result`` [S, L, H, D] of ``bucket`` back into rows of ``out`` [N, H, D]."""
    tokens = result.reshape(-1, *result.shape[2:])
    if bucket.rows is None:
        out.copy_(tokens)
        return
    out[bucket.targets] = tokens if bucket.flat is None else tokens[bucket.flat]


def segment_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: SegmentLayout) -> torch.Tensor:
    """Softmax attention inside every segment.

    Args:
        q, k, v: [N, H, D] per-row queries, keys, values.
        layout: the segments.

    Returns:
        [N, H, D].
    """
    out = q.new_empty(q.shape)
    for bucket in layout.buckets:
        _scatter(out, _sdpa(_gather(q, bucket), _gather(k, bucket), _gather(v, bucket), bucket.mask), bucket)
    return out


def segment_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: SegmentLayout) -> torch.Tensor:
    """Every segment's queries attend to its own item's dense keys and values.

    Args:
        q: [N, H, D] per-row queries.
        k, v: [B, S, H, D] per-item keys and values, indexed by the layout's segment ids.
        layout: the segments (batch items).

    Returns:
        [N, H, D].
    """
    out = q.new_empty(q.shape)
    for bucket in layout.buckets:
        if bucket.rows is None and bucket.segments.shape[0] == k.shape[0]:
            keys, values = k, v  # every item, in order: no copy
        else:
            keys, values = k[bucket.segments], v[bucket.segments]
        # Padded queries see real keys (no mask needed); their outputs are dropped by _scatter.
        _scatter(out, _sdpa(_gather(q, bucket), keys, values, None), bucket)
    return out


class SparseMultiHeadAttention(MultiHeadAttention):
    """TRELLIS's sparse attention: ``MultiHeadAttention``'s projections and keys over voxel segments.

    Args:
        channels: model width C.
        num_heads: H.
        ctx_channels: cross-attention context width (default C).
        cross: cross-attention to a dense [B, S, C_ctx] context instead of self-attention.
        attn_mode: "full" (each batch item's voxels) or "windowed" (swin windows, self only).
        window_size: window width in voxels per axis ("windowed").
        shift_window: window shift in voxels, one int for all axes or three ("windowed").
        qk_rms_norm: per-head RMS norm of queries and keys.
        qkv_bias: bias on the input projections.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        ctx_channels: int | None = None,
        cross: bool = False,
        attn_mode: str = "full",
        window_size: int | None = None,
        shift_window: int | tuple[int, int, int] = 0,
        qk_rms_norm: bool = False,
        qkv_bias: bool = True,
    ):
        super().__init__(channels, num_heads, ctx_channels, cross, qk_rms_norm, qkv_bias)
        if attn_mode not in ("full", "windowed"):
            raise ValueError(f"attn_mode must be 'full' or 'windowed', got {attn_mode!r}")
        if attn_mode == "windowed" and (cross or not window_size):
            raise ValueError(
                f"windowed attention needs self-attention and a window_size, got cross={cross}, window_size={window_size}"
            )
        self.attn_mode = attn_mode
        self.window_size = window_size
        self.shift_window = shift_window

    def forward(  # type: ignore[override]
        self,
        x: SparseTensor,
        context: torch.Tensor | None = None,
        context_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> SparseTensor:
        """Attention on x's [N, C] features; cross-attention takes ``context`` [B, S, C_ctx] or
        its precomputed ``context_kv`` (two [B, S, H, D], from ``project_context``)."""
        if self.cross:
            q = self.project_query(x.feats)
            k, v = context_kv if context_kv is not None else self.project_context(context)
            heads = segment_cross_attention(q, k, v, batch_layout(x))
        else:
            q, k, v = self.project_self(x.feats)
            if self.attn_mode == "windowed":
                layout = window_layout(x, self.window_size, self.shift_window)
            else:
                layout = batch_layout(x)
            heads = segment_self_attention(q, k, v, layout)
        return x.replace(self.output(heads))
