"""Parity with the public TRELLIS reference on identical seeded random weights.

The reference (microsoft/TRELLIS, MIT) is not installable from a package registry: PyPI's
``trellis-3d`` lacks ``trellis/modules`` and FlexiCubes. So each parity test has two sources for the
reference's outputs:

- **live**, when ``GEN3D_TRELLIS_REFERENCE`` names a folder holding the reference checkout (see
  ``REFERENCE_LAYOUT``): the reference modules run here, on the CPU in fp32, with the smallest shims;
- **recorded**, otherwise (CI): ``tests/fixtures/trellis/<case>.safetensors``, written by the live run
  with ``GEN3D_RECORD_REFERENCE=1``. The file's metadata names the reference commits.

Both sides get their weights from ``seeded_state_dict``: our modules carry exactly the official keys
and shapes, so the same key gets the same tensor on either side.

The shims, and nothing more:
- dense attention: ``ATTN_BACKEND=sdpa`` (the reference's own torch path);
- sparse attention: a stand-in ``xformers`` package whose two calls the reference makes
  (``memory_efficient_attention``, ``fmha.BlockDiagonalMask.from_seqlens``) run SDPA per segment;
- spconv 2.3.8's CPU build refuses a fused bias ("cpu don't support act and bias") without autograd:
  its convolutions run without the bias, which is added after;
- FlexiCubes imports kaolin for one input check, ``kaolin.utils.testing.check_tensor``: a stand-in
  checks the shape the same way (kaolin is not installable here);
- the reference's representations hard-code CUDA (``device="cuda"`` defaults, ``.cuda()`` calls): on a
  machine without CUDA, ``compute`` runs under ``cuda_as_cpu``, which maps those to the CPU;
- ``trellis/__init__`` and ``trellis/pipelines/__init__`` (the CUDA renderers, torchvision, rembg) are
  skipped: the model, sampler and representation modules import directly.
"""

import contextlib
import functools
import hashlib
import importlib
import os
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from gen3d.models.trellis.dinov2 import DinoV2Config

REFERENCE_ENV = "GEN3D_TRELLIS_REFERENCE"
RECORD_ENV = "GEN3D_RECORD_REFERENCE"
RECORDINGS = Path(__file__).resolve().parents[2] / "fixtures" / "trellis"
#: What the folder named by GEN3D_TRELLIS_REFERENCE holds, each from ``git archive`` of the commit named.
REFERENCE_LAYOUT = {
    "trellis": "microsoft/TRELLIS 6b0d647 (the package folder `trellis/`)",
    "trellis/representations/mesh/flexicubes": "MaxtirError/FlexiCubes 815e075 (TRELLIS's submodule pin)",
    "dinov2": "facebookresearch/dinov2 b8931f7 (the whole repository: hubconf.py, dinov2/)",
    "site": "pip install --no-deps --target site spconv==2.3.8 cumm==0.7.11 pccm ccimport pybind11 fire "
    "ninja lark portalocker requests easydict plyfile utils3d termcolor",
}
REFERENCE_COMMITS = "TRELLIS 6b0d647, FlexiCubes 815e075, dinov2 b8931f7, spconv 2.3.8"
#: Relative error (Frobenius norm of the difference over the reference's) allowed in fp32.
FP32_RTOL = 1e-5


def reference_root() -> Path | None:
    """The reference folder, or None when this machine has none (CI reads the recordings)."""
    value = os.environ.get(REFERENCE_ENV)
    if not value:
        return None
    root = Path(value).expanduser()
    missing = [name for name in REFERENCE_LAYOUT if not (root / name).exists()]
    if missing:
        raise RuntimeError(f"{REFERENCE_ENV}={root} lacks {missing}; expected layout: {REFERENCE_LAYOUT}")
    return root


def seeded_state_dict(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic random values for every state-dict entry of ``module``, keyed by name.

    Each tensor comes from its own generator seeded by ``seed`` and the key, so two modules with the
    same keys and shapes (ours and the reference's) get identical values whatever their key order.
    Matrices and kernels get N(0, 1/fan_in); 1-D weights and gammas 1 + N(0, 0.1^2), so norms stay
    near identity; other 1-D tensors (biases) N(0, 0.1^2). Integer buffers are kept as they are.
    """
    values = {}
    for name, tensor in module.state_dict().items():
        if not tensor.is_floating_point():
            values[name] = tensor.clone()
            continue
        digest = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")
        generator = torch.Generator().manual_seed(digest)
        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
        if tensor.dim() >= 2:
            fan_in = tensor.numel() // tensor.shape[0]
            value = noise / fan_in**0.5
        elif name.endswith(("weight", "gamma")):
            value = 1 + 0.1 * noise
        else:
            value = 0.1 * noise
        values[name] = value.to(tensor.dtype)
    return values


def load_seeded(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill ``module`` strictly with ``seeded_state_dict`` and return it in eval mode, fp32."""
    module.float()
    module.load_state_dict(seeded_state_dict(module, seed), strict=True)
    return module.eval()


def layout_digest(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's layout, small enough to record: a digest of its sorted key -> shape map, its key
    count and its parameter count (full-size layouts are compared on the meta device)."""
    state = module.state_dict()
    text = "\n".join(f"{key}:{tuple(value.shape)}" for key, value in sorted(state.items()))
    digest = torch.frombuffer(bytearray(hashlib.sha256(text.encode()).digest()), dtype=torch.uint8)
    return {
        "layout_sha256": digest,
        "keys": torch.tensor(len(state)),
        "parameters": torch.tensor(sum(p.numel() for p in module.parameters())),
    }


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """||ours - reference|| / ||reference|| in float64 (0 when both are zero)."""
    ours, reference = ours.double(), reference.double()
    scale = reference.norm()
    difference = (ours - reference).norm()
    return float(difference / scale) if scale > 0 else float(difference)


def assert_parity(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], rtol: float = FP32_RTOL) -> None:
    """Every named output matches in shape and within ``rtol`` relative error."""
    assert sorted(ours) == sorted(reference)
    errors = {}
    for name, expected in reference.items():
        assert ours[name].shape == expected.shape, (name, tuple(ours[name].shape), tuple(expected.shape))
        if expected.is_floating_point():
            errors[name] = relative_error(ours[name], expected)
        else:
            errors[name] = 0.0 if torch.equal(ours[name].to(expected.dtype), expected) else float("inf")
    assert all(error <= rtol for error in errors.values()), errors


def reference_outputs(case: str, compute: Callable[[types.SimpleNamespace], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The reference's outputs for ``case``: live when the reference is here, else the recording.

    ``compute`` receives ``import_reference()``'s namespace and returns named CPU tensors. With
    ``GEN3D_RECORD_REFERENCE=1`` a live result also overwrites the recording.
    """
    recording = RECORDINGS / f"{case}.safetensors"
    root = reference_root()
    if root is None:
        assert recording.exists(), f"no recording {recording}: run once with {REFERENCE_ENV} and {RECORD_ENV}=1"
        return load_file(recording)
    reference = import_reference(root)
    with torch.no_grad(), cuda_as_cpu():
        outputs = {name: value.detach().cpu().contiguous() for name, value in compute(reference).items()}
    if os.environ.get(RECORD_ENV) == "1":
        recording.parent.mkdir(parents=True, exist_ok=True)
        save_file(outputs, recording, metadata={"reference": REFERENCE_COMMITS, "case": case})
    return outputs


#: Factories the reference's representations call with ``device="cuda"``.
_FACTORIES = ("tensor", "zeros", "ones", "full", "arange", "empty", "linspace", "zeros_like", "ones_like", "randn", "rand")


@contextlib.contextmanager
def cuda_as_cpu() -> Iterator[None]:
    """Inside, ``Tensor.cuda()``, ``Tensor.to("cuda")`` and ``device="cuda"`` in torch's factories mean
    the CPU (a no-op where CUDA exists)."""
    if torch.cuda.is_available():
        yield
        return
    saved = {name: getattr(torch, name) for name in _FACTORIES}
    saved_cuda, saved_to = torch.Tensor.cuda, torch.Tensor.to

    def to_cpu(self: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        args = tuple("cpu" if str(arg).startswith("cuda") else arg for arg in args)
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return saved_to(self, *args, **kwargs)

    def on_cpu(factory: Callable) -> Callable:
        @functools.wraps(factory)
        def call(*args, **kwargs):
            if "device" in kwargs and str(kwargs["device"]).startswith("cuda"):
                kwargs["device"] = "cpu"
            return factory(*args, **kwargs)

        return call

    try:
        for name, factory in saved.items():
            setattr(torch, name, on_cpu(factory))
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
        torch.Tensor.to = to_cpu
        yield
    finally:
        for name, factory in saved.items():
            setattr(torch, name, factory)
        torch.Tensor.cuda, torch.Tensor.to = saved_cuda, saved_to


def import_reference(root: Path | None = None, xformers_stand_in: bool = True) -> types.SimpleNamespace:
    """The reference's modules, imported once with the shims; ``root`` defaults to the env's.

    ``xformers_stand_in=False`` leaves the sparse attention to a real ``xformers`` (which ``root/site``
    must hold): the GPU timing of ``scripts/bench_trellis_reference.py`` runs the reference as shipped.
    """
    root = root or reference_root()
    if root is None:
        raise RuntimeError(f"set {REFERENCE_ENV} to the reference folder ({REFERENCE_LAYOUT})")
    if "trellis" not in sys.modules:
        _install_shims(root, xformers_stand_in)
    return types.SimpleNamespace(
        trellis=sys.modules["trellis"],
        sparse=importlib.import_module("trellis.modules.sparse"),
        models=importlib.import_module("trellis.models"),
        samplers=importlib.import_module("trellis.pipelines.samplers"),
        representations=importlib.import_module("trellis.representations"),
        dinov2_backbones=importlib.import_module("dinov2.hub.backbones"),
    )


def reference_dinov2(cfg: "DinoV2Config") -> torch.nn.Module:
    """The hub's DinoVisionTransformer with ``dinov2_vitl14_reg``'s settings at ``cfg``'s sizes
    (``import_reference`` must have run: it puts the dinov2 checkout on the path)."""
    from dinov2.layers import MemEffAttention, NestedTensorBlock
    from dinov2.models.vision_transformer import DinoVisionTransformer

    return DinoVisionTransformer(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        block_fn=functools.partial(NestedTensorBlock, attn_class=MemEffAttention),
        init_values=1.0,
        ffn_layer="mlp",
        block_chunks=0,
        num_register_tokens=cfg.num_register_tokens,
        interpolate_antialias=cfg.interpolate_antialias,
        interpolate_offset=cfg.interpolate_offset,
    )


def _install_shims(root: Path, xformers_stand_in: bool) -> None:
    os.environ["ATTN_BACKEND"] = "sdpa"
    os.environ["SPARSE_ATTN_BACKEND"] = "xformers"
    os.environ["SPARSE_BACKEND"] = "spconv"
    os.environ.setdefault("SPCONV_ALGO", "native")  # the CPU build's only algorithm; a GPU run may set "auto"
    for path in (root / "site", root / "dinov2", root):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    if xformers_stand_in:
        os.environ["XFORMERS_DISABLED"] = "1"  # dinov2's own layers: their plain torch path, not the stand-in
        sys.modules.update(_xformers_stand_in())
    sys.modules.update(_kaolin_stand_in())
    # Bare packages: their __init__ files import the CUDA renderers and the whole image pipeline
    # (torchvision, rembg); the samplers and models below need neither.
    for name in ("trellis", "trellis.pipelines"):
        package = types.ModuleType(name)
        package.__path__ = [str(root.joinpath(*name.split(".")))]
        sys.modules[name] = package
    _patch_spconv_cpu_bias()


class _BlockDiagonalMask:
    """xformers' block-diagonal mask: query segment i attends to key segment i only."""

    def __init__(self, q_seqlen: list[int], kv_seqlen: list[int]):
        self.q_seqlen = list(q_seqlen)
        self.kv_seqlen = list(kv_seqlen)

    @classmethod
    def from_seqlens(cls, q_seqlen: list[int], kv_seqlen: list[int] | None = None) -> "_BlockDiagonalMask":
        return cls(q_seqlen, kv_seqlen if kv_seqlen is not None else q_seqlen)


def _memory_efficient_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_bias: _BlockDiagonalMask | None = None
) -> torch.Tensor:
    """xformers' call on [B, N, H, C] tensors: SDPA per batch row, or per segment under a mask."""
    if attn_bias is None:
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    q_parts = q[0].split(attn_bias.q_seqlen)
    k_parts = k[0].split(attn_bias.kv_seqlen)
    v_parts = v[0].split(attn_bias.kv_seqlen)
    outputs = [
        F.scaled_dot_product_attention(qs.transpose(0, 1), ks.transpose(0, 1), vs.transpose(0, 1)).transpose(0, 1)
        for qs, ks, vs in zip(q_parts, k_parts, v_parts)
    ]
    return torch.cat(outputs).unsqueeze(0)


def _xformers_stand_in() -> dict[str, types.ModuleType]:
    xformers = types.ModuleType("xformers")
    ops = types.ModuleType("xformers.ops")
    fmha = types.ModuleType("xformers.ops.fmha")
    fmha.BlockDiagonalMask = _BlockDiagonalMask
    ops.fmha = fmha
    ops.memory_efficient_attention = _memory_efficient_attention
    xformers.ops = ops
    return {"xformers": xformers, "xformers.ops": ops, "xformers.ops.fmha": fmha}


def _check_tensor(tensor: torch.Tensor, shape: tuple | None = None, throw: bool = True, **_: object) -> bool:
    """kaolin's shape check: ``None`` in ``shape`` matches any size."""
    matches = shape is None or (
        tensor.dim() == len(shape) and all(want is None or want == got for want, got in zip(shape, tensor.shape))
    )
    if not matches and throw:
        raise ValueError(f"tensor shape {tuple(tensor.shape)} is not {shape}")
    return matches


def _kaolin_stand_in() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in ("kaolin", "kaolin.utils", "kaolin.utils.testing")}
    modules["kaolin.utils.testing"].check_tensor = _check_tensor
    modules["kaolin"].utils = modules["kaolin.utils"]
    modules["kaolin.utils"].testing = modules["kaolin.utils.testing"]
    return modules


def _patch_spconv_cpu_bias() -> None:
    from spconv.pytorch import conv

    original = conv.SparseConvolution.forward
    if getattr(original, "gen3d_bias_shim", False):
        return

    def forward_bias_after(self, input):  # noqa: A002 - spconv's own parameter name
        bias = self.bias
        if bias is None or input.features.is_cuda:
            return original(self, input)
        self.bias = None
        try:
            output = original(self, input)
        finally:
            self.bias = bias
        return output.replace_feature(output.features + bias)

    forward_bias_after.gen3d_bias_shim = True
    conv.SparseConvolution.forward = forward_bias_after
