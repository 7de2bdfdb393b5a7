"""The three structured-latent decoders' raw outputs against the reference networks, and their keys."""

import types

import pytest
import torch
import torch.nn.functional as F

from gen3d.models.trellis.slat_decoders import (
    SLatDecoderConfig,
    SLatGaussianDecoder,
    SLatMeshDecoder,
    SLatRadianceFieldDecoder,
)
from gen3d.models.trellis.sparse.tensor import SparseTensor
from tests.models.trellis.reference import assert_parity, load_seeded, reference_outputs
from tests.models.trellis.sparse_cases import (
    half_like_release,
    random_feats,
    shell_coords,
    single_threaded,
)

SEED = 16
OURS = {"gaussian": SLatGaussianDecoder, "radiance_field": SLatRadianceFieldDecoder, "mesh": SLatMeshDecoder}
#: Every STRIDE-th output row is recorded (with every row's norm): keeps the recordings small.
STRIDE = {"gaussian": 4, "radiance_field": 4, "mesh": 16}


def _input() -> SparseTensor:
    coords = shell_coords(8, [1.5, 2.5], SEED)
    return SparseTensor(coords, random_feats(coords.shape[0], 8, SEED))


def _reference_class(kind: str) -> type:
    from trellis.models import structured_latent_vae as vae

    return {
        "gaussian": vae.SLatGaussianDecoder,
        "radiance_field": vae.SLatRadianceFieldDecoder,
        "mesh": vae.SLatMeshDecoder,
    }[kind]


def _summary(kind: str, coords: torch.Tensor, feats: torch.Tensor) -> dict[str, torch.Tensor]:
    rows = slice(None, None, STRIDE[kind])
    return {f"{kind}_coords": coords[rows], f"{kind}_rows": feats[rows], f"{kind}_row_norms": feats.norm(dim=1)}


@single_threaded
def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    from trellis.models.structured_latent_vae.base import SparseTransformerBase

    x = _input()
    sparse = ref.sparse.SparseTensor(feats=x.feats, coords=x.coords)
    outputs = {}
    for kind in OURS:
        model = _reference_class(kind)(**SLatDecoderConfig.tiny(kind).to_reference_dict() | {"use_fp16": False})
        if kind == "gaussian":
            outputs["offset_perturbation"] = model.offset_perturbation.clone()
        model = load_seeded(model, SEED)
        # The reference's forward, stopped before to_representation.
        h = SparseTransformerBase.forward(model, sparse)
        if kind == "mesh":
            for block in model.upsample:
                h = block(h)
            h = model.out_layer(h)
        else:
            h = model.out_layer(h.replace(F.layer_norm(h.feats, h.feats.shape[-1:])))
        outputs |= _summary(kind, h.coords, h.feats)
    return outputs


def test_decoders_match_the_reference() -> None:
    x = _input()
    ours = {"offset_perturbation": SLatGaussianDecoder(SLatDecoderConfig.tiny("gaussian")).offset_perturbation}
    for kind, decoder in OURS.items():
        model = load_seeded(decoder(SLatDecoderConfig.tiny(kind)), SEED)
        with torch.no_grad():
            out = model(x)
        ours |= _summary(kind, out.coords, out.feats)
    assert_parity(ours, reference_outputs("slat_decoders", _reference))


def _shapes(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.{name}": torch.tensor(value.shape, dtype=torch.int64) for name, value in module.state_dict().items()
    }


def _official_reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    shapes = {}
    for kind in OURS:
        with torch.device("meta"):
            model = _reference_class(kind)(**SLatDecoderConfig.official(kind).to_reference_dict())
        shapes |= _shapes(model, kind)
    return shapes


def test_official_keys_and_shapes_match_the_reference() -> None:
    expected = reference_outputs("slat_decoders_official_keys", _official_reference)
    ours = {}
    for kind, decoder in OURS.items():
        with torch.device("meta"):
            model = decoder(SLatDecoderConfig.official(kind))
        ours |= _shapes(model, kind)
        parameters = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
        assert parameters == sum(int(shape.prod()) for name, shape in expected.items() if name.startswith(f"{kind}."))
    assert_parity(ours, expected)


def test_official_mesh_config_round_trips_the_checkpoint_args() -> None:
    args = {
        "resolution": 64, "model_channels": 768, "latent_channels": 8, "num_blocks": 12, "num_heads": 12,
        "mlp_ratio": 4, "attn_mode": "swin", "window_size": 8, "use_fp16": True,
        "representation_config": {"use_color": True},
    }  # fmt: skip
    cfg = SLatDecoderConfig.from_reference_dict(args)
    assert cfg == SLatDecoderConfig.official("mesh")
    assert SLatDecoderConfig.from_reference_dict(cfg.to_reference_dict()) == cfg
    with pytest.raises(ValueError, match="use_rope"):
        SLatDecoderConfig.from_reference_dict(args | {"use_rope": True})
    with pytest.raises(ValueError, match="attn_mode"):
        SLatDecoderConfig.from_reference_dict(args | {"attn_mode": "full"})


def test_mesh_decoder_builds_each_map_once_and_runs_in_bf16() -> None:
    coords = shell_coords(8, [1.0], SEED)
    x = SparseTensor(coords, random_feats(coords.shape[0], 8, SEED))
    model = load_seeded(SLatMeshDecoder(SLatDecoderConfig.tiny("mesh")), SEED)
    with torch.no_grad():
        full = model(x)
        half = half_like_release(model)(x)
    assert half.coords is full.coords and half.dtype == torch.float32
    assert (half.feats - full.feats).norm() / full.feats.norm() < 3e-2
    assert x.cache.builds[("windows", 4, (0, 0, 0))] == 1 and x.cache.builds[("windows", 4, (2, 2, 2))] == 1
    level128 = x.cache.get("subdivide")[1]
    level256 = level128.get("subdivide")[1]
    assert level128.builds == {"subdivide": 1, ("neighbours", 3): 1, "batch_lengths": 1, "batch_index": 1}
    assert level256.builds[("neighbours", 3)] == 1
    assert full.coords.shape[0] == 64 * coords.shape[0]
