"""DINOv2 ViT-L/14-reg (TRELLIS's image conditioner) against the hub model, on identical seeded weights."""

import types

import pytest
import torch
import torch.nn.functional as F

from gen3d.models.trellis.dinov2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DinoV2,
    DinoV2Config,
    hf_to_hub,
    hub_to_hf,
    to_hub_layout,
)
from tests.models.trellis.reference import (
    assert_parity,
    layout_digest,
    load_seeded,
    reference_dinov2,
    reference_outputs,
)

SEED = 13
#: The registers model resizes its position table by exact size, antialiased (the hub's ``*_reg``);
#: the plain DINOv2 models by a scale with a 0.1 offset: both paths are checked.
CONFIGS = {
    "reg": DinoV2Config.tiny(),
    "offset": DinoV2Config(embed_dim=64, depth=2, num_heads=4, interpolate_antialias=False, interpolate_offset=0.1),
}
#: (config, height, width, batch) per case: the native 518 px grid (no resizing), a smaller square
#: and a non-square image.
CASES = {
    "native": ("reg", 518, 518, 1),
    "square": ("reg", 224, 224, 2),
    "oblong": ("reg", 266, 196, 1),
    "offset": ("offset", 224, 224, 1),
}


def _image(height: int, width: int, batch: int) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(SEED + height + width))


def _reference(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
    models = {name: load_seeded(reference_dinov2(cfg), SEED) for name, cfg in CONFIGS.items()}
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    outputs = {}
    for case, (config, height, width, batch) in CASES.items():
        # TRELLIS's encode_image: torchvision's Normalize, x_prenorm, then a layer norm without affine.
        image = (_image(height, width, batch) - mean) / std
        features = models[config](image, is_training=True)["x_prenorm"]
        outputs[case] = F.layer_norm(features, features.shape[-1:])
    with torch.device("meta"):
        full = ref.dinov2_backbones.dinov2_vitl14_reg(pretrained=False)
    outputs.update(layout_digest(full))
    return outputs


def _ours(name: str = "reg") -> DinoV2:
    return load_seeded(DinoV2(CONFIGS[name]), SEED)


def test_encoder_matches_the_hub_model_and_its_full_sizelayout_digest() -> None:
    models = {name: _ours(name) for name in CONFIGS}
    with torch.no_grad():
        ours = {case: models[config].encode(_image(h, w, b)) for case, (config, h, w, b) in CASES.items()}
    with torch.device("meta"):
        full = DinoV2(DinoV2Config.official())
    ours.update(layout_digest(full))
    assert_parity(ours, reference_outputs("dinov2", _reference))


def test_full_size_condition_has_1374_tokens_and_the_official_parameter_count() -> None:
    with torch.device("meta"):
        full = DinoV2(DinoV2Config.official())
        tokens = full.encode(torch.empty(1, 3, 518, 518))
    assert tokens.shape == (1, 1374, 1024)
    assert sum(p.numel() for p in full.parameters()) == 304_372_736
    assert tuple(full.state_dict()["pos_embed"].shape) == (1, 1370, 1024)


def test_hugging_face_keys_round_trip() -> None:
    state = _ours().state_dict()
    hf = hub_to_hf(state)
    assert torch.equal(
        torch.cat([hf[f"encoder.layer.1.attention.attention.{name}.weight"] for name in ("query", "key", "value")]),
        state["blocks.1.attn.qkv.weight"],
    )
    assert {"embeddings.position_embeddings", "layernorm.bias", "encoder.layer.0.layer_scale2.lambda1"} <= set(hf)
    back = hf_to_hub(hf)
    assert sorted(back) == sorted(state)
    assert all(torch.equal(back[key], state[key]) for key in state)
    assert to_hub_layout(hf).keys() == state.keys() and to_hub_layout(state) is state
    with pytest.raises(ValueError, match="encoder.layer.0.extra"):
        hf_to_hub({**hf, "encoder.layer.0.extra": torch.zeros(1)})
    partial = {key: value for key, value in hf.items() if "attention.attention.value" not in key}
    with pytest.raises(ValueError, match="block 0"):
        hf_to_hub(partial)


def test_hugging_face_layout_is_transformers_model() -> None:
    """Our Hugging Face names, renamed as transformers renames the Hub file on load, are exactly its
    ``Dinov2WithRegistersModel``'s keys and shapes at full size."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Dinov2WithRegistersConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, image_size=518, patch_size=14
    )
    with torch.device("meta"):
        theirs = transformers.Dinov2WithRegistersModel(cfg).state_dict()
        hub = DinoV2(DinoV2Config.official()).state_dict()
    ours = hub_to_hf(hub)
    renames = [("attention.attention.query", "attention.q_proj"), ("attention.attention.key", "attention.k_proj")]
    renames += [("attention.attention.value", "attention.v_proj"), ("attention.output.dense", "attention.o_proj")]

    def modern(key: str) -> str:
        for old, new in renames:
            key = key.replace(old, new)
        return key

    expected = {key: value.shape for key, value in theirs.items()}
    assert {modern(key): value.shape for key, value in ours.items()} == expected
    # ... and hf_to_hub takes those newer names too.
    assert sorted(hf_to_hub({modern(key): value for key, value in ours.items()})) == sorted(hub)
