"""fp8 linear layers held as plain tensors, so ``torch.compile`` traces them like any bf16 layer.

torchao keeps a float8 weight as a ``Float8Tensor`` subclass whose matmul it dispatches at trace
time. :class:`Float8Linear` holds the very same data (e4m3 weight, one float32 scale per output
row) as ordinary buffers and calls the kernel torchao calls, ``torch._scaled_mm``, after the same
per-row activation quantisation. Outputs are therefore the ones torchao computes (bit for bit on
the CPU, eager and compiled); only the tensor subclass is gone from what Dynamo and AOTAutograd
trace and cache. Whether that shortens a start on the GPU is what ``scripts/bench_startup.py``
measures.

:func:`unwrap_float8_` converts a module that torchao has already quantised (``quantize_`` for
random weights, diffusers' ``TorchAoConfig`` at load for real ones), so both weight paths end in
the same layers.
"""

import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torchao.quantization import Float8Tensor

logger = logging.getLogger(__name__)

#: The only float8 format converted: e4m3 weights and activations, as ``float8_config`` asks.
FLOAT8_DTYPE = torch.float8_e4m3fn
FLOAT8_MAX = torch.finfo(FLOAT8_DTYPE).max


def quantize_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row dynamic e4m3 quantisation, step for step as torchao's ``Float8Tensor.from_hp``.

    The absolute maximum and its division by the e4m3 range stay in the input dtype before the
    scale is widened to float32, as torchao does, so the scales (and the products) match bit for bit.

    Args:
        rows: (M, K) activations in the compute dtype (bf16).

    Returns:
        ``(data, scale)``: (M, K) float8_e4m3fn and (M, 1) float32 with ``rows ~= data * scale``.
    """
    scale = (rows.abs().amax(dim=-1, keepdim=True) / FLOAT8_MAX).to(torch.float32)
    data = (rows.to(torch.float32) / scale).clamp(-FLOAT8_MAX, FLOAT8_MAX).to(FLOAT8_DTYPE)
    return data, scale


class Float8Linear(nn.Module):
    """``y = x W^T + b`` with W in e4m3 and x quantised per row on the fly (dynamic fp8).

    A row is one token of one sample, so its scale never sees another request's activations: a
    batched request's rows are quantised exactly as alone (``tests/parts/test_float8_linear.py``).

    ``weight`` is registered as None on purpose: transformers' T5 casts its activations to
    ``wo.weight.dtype`` when that is a tensor, which for fp8 data would drop the scaling.

    Args:
        qdata: (out_features, in_features) float8_e4m3fn weight.
        scale: (out_features, 1) float32 per-row weight scale.
        bias: (out_features,) in the compute dtype, or None.
        use_fast_accum: ``torch._scaled_mm``'s fast accumulation (torchao's default for per-row).
    """

    def __init__(
        self, qdata: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, use_fast_accum: bool
    ) -> None:
        super().__init__()
        self.in_features = qdata.shape[1]
        self.out_features = qdata.shape[0]
        self.use_fast_accum = use_fast_accum
        self.register_buffer("qdata", qdata)
        self.register_buffer("scale", scale)
        self.register_parameter("weight", None)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_features) in the compute dtype -> (..., out_features) in the same dtype."""
        data, scale = quantize_rows(x.reshape(-1, self.in_features))
        out = torch._scaled_mm(
            data,
            self.qdata.t(),  # column-major view, the layout _scaled_mm wants for its second operand
            scale_a=scale,
            scale_b=self.scale.t(),
            bias=self.bias,
            out_dtype=x.dtype,
            use_fast_accum=self.use_fast_accum,
        )
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def check_convertible(weight: "Float8Tensor", name: str) -> None:
    """Refuse any torchao float8 layout other than the per-row e4m3 one :class:`Float8Linear` computes.

    Raises:
        ValueError: naming the layer and the setting that differs.
    """
    act = weight.act_quant_kwargs
    rows = tuple(weight.block_size) == (1, weight.shape[1]) and tuple(weight.scale.shape) == (weight.shape[0], 1)
    problems = {
        "weight is not scaled per row": not rows,
        f"weight dtype {weight.qdata.dtype}": weight.qdata.dtype != FLOAT8_DTYPE,
        "activations are not quantised (weight-only fp8)": act is None,
    }
    if act is not None:
        act_rows = type(act.granularity).__name__ == "PerRow"
        problems[f"activation granularity {act.granularity}"] = not act_rows
        problems[f"activation dtype {act.float8_dtype}"] = act.float8_dtype != FLOAT8_DTYPE
        problems["activation scale bounds"] = act.hp_value_lb is not None or act.hp_value_ub is not None
    problems["inner-dimension padding"] = bool(weight.mm_config.pad_inner_dim)
    found = [problem for problem, present in problems.items() if present]
    if found:
        raise ValueError(
            f"fp8_weights: plain supports torchao's per-row e4m3 dynamic fp8 only; layer {name!r} has {found}; "
            "use fp8_weights: torchao"
        )


def to_float8_linear(linear: nn.Linear, name: str) -> Float8Linear:
    """A :class:`Float8Linear` sharing ``linear``'s torchao float8 data (no copy)."""
    weight = linear.weight
    check_convertible(weight, name)
    bias = None if linear.bias is None else linear.bias.detach()
    return Float8Linear(weight.qdata, weight.scale, bias, weight.mm_config.use_fast_accum)


def unwrap_float8_(module: nn.Module) -> int:
    """Replace every ``nn.Linear`` of ``module`` whose weight torchao quantised by a :class:`Float8Linear`.

    Linears torchao left in high precision (dimensions not multiples of 16) stay as they are.

    Returns:
        The number of layers converted.

    Raises:
        ValueError: a quantised layer whose layout :class:`Float8Linear` does not compute.
    """
    from torchao.quantization import Float8Tensor
    from torchao.utils import _is_mslk_available

    if _is_mslk_available():
        logger.warning("torchao would run its mslk fp8 kernels here; plain layers run torch._scaled_mm instead")
    targets = [
        (name, child)
        for name, child in module.named_modules()
        if isinstance(child, nn.Linear) and isinstance(child.weight, Float8Tensor)
    ]
    for name, linear in targets:
        parent_name, _, attribute = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        setattr(parent, attribute, to_float8_linear(linear, name))
    logger.info("%s: %d float8 linear layers now hold plain tensors", type(module).__name__, len(targets))
    return len(targets)
