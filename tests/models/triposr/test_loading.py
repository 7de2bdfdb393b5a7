"""from_pretrained on a local directory in the reference schema: strict, safe, verified."""

import hashlib
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from gen3d.errors import WeightsUnavailableError
from gen3d.models.triposr import CheckpointError, TripoSR, TripoSRConfig
from gen3d.models.triposr.image_tokenizer import vit_keys_to_modern

#: The stabilityai/TripoSR config.yaml layout, at tiny sizes (ViT sizes override the DINO config).
TINY_CONFIG_YAML = """\
cond_image_size: 64
image_tokenizer_cls: tsr.models.tokenizers.image.DINOSingleImageTokenizer
image_tokenizer:
  pretrained_model_name_or_path: facebook/dino-vitb16
  hidden_size: 32
  num_hidden_layers: 2
  num_attention_heads: 2
  intermediate_size: 64
tokenizer_cls: tsr.models.tokenizers.triplane.Triplane1DTokenizer
tokenizer:
  plane_size: 8
  num_channels: 32
backbone_cls: tsr.models.transformer.transformer_1d.Transformer1D
backbone:
  in_channels: ${tokenizer.num_channels}
  num_attention_heads: 2
  attention_head_dim: 16
  num_layers: 2
  cross_attention_dim: 32
post_processor_cls: tsr.models.network_utils.TriplaneUpsampleNetwork
post_processor:
  in_channels: 32
  out_channels: 8
decoder_cls: tsr.models.network_utils.NeRFMLP
decoder:
  in_channels: 24
  n_neurons: 16
  n_hidden_layers: 3
  activation: silu
renderer_cls: tsr.models.nerf_renderer.TriplaneNeRFRenderer
renderer:
  radius: 0.87
  feature_reduction: concat
  density_activation: exp
  density_bias: -1.0
  num_samples_per_ray: 128
"""


def _write(directory: Path, state: object) -> Path:
    (directory / "config.yaml").write_text(TINY_CONFIG_YAML)
    torch.save(state, directory / "model.ckpt")
    return directory


@pytest.fixture
def source() -> TripoSR:
    torch.manual_seed(0)
    return TripoSR.from_config(TripoSRConfig.tiny())


def test_config_yaml_parses_to_tiny_preset(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(TINY_CONFIG_YAML)
    assert TripoSRConfig.from_yaml(tmp_path / "config.yaml") == TripoSRConfig.tiny()
    assert TripoSRConfig.from_reference_dict(TripoSRConfig.official().to_reference_dict()) == TripoSRConfig.official()


def test_strict_load_reproduces_the_model(tmp_path: Path, source: TripoSR) -> None:
    _write(tmp_path, source.state_dict())
    loaded = TripoSR.from_pretrained(str(tmp_path))
    images = torch.rand(1, 64, 64, 3)
    torch.testing.assert_close(loaded(images), source(images))
    half = TripoSR.from_pretrained(str(tmp_path), dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.image_tokenizer.image_mean.dtype == torch.float32


def test_transformers_5_9_vit_names_load(tmp_path: Path, source: TripoSR) -> None:
    renamed = vit_keys_to_modern(source.state_dict(), prefix="image_tokenizer.model.")
    assert any(key.startswith("image_tokenizer.model.layers.0.attention.q_proj.") for key in renamed)
    assert "decoder.layers.0.weight" in renamed
    _write(tmp_path, renamed)
    loaded = TripoSR.from_pretrained(str(tmp_path))
    torch.testing.assert_close(loaded.state_dict(), source.state_dict())


@pytest.mark.parametrize("damage,named", [
    (lambda sd: sd.pop("decoder.layers.0.bias"), "decoder.layers.0.bias"),
    (lambda sd: sd.__setitem__("decoder.layers.99.weight", torch.zeros(1)), "decoder.layers.99.weight"),
    (lambda sd: sd.__setitem__("tokenizer.embeddings", torch.zeros(3, 32, 4, 4)), "tokenizer.embeddings"),
])
def test_bad_layout_fails_listing_the_key(tmp_path: Path, source: TripoSR, damage, named: str) -> None:
    state = dict(source.state_dict())
    damage(state)
    _write(tmp_path, state)
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        TripoSR.from_pretrained(str(tmp_path))


class Payload:
    """An arbitrary object: unpickling it would run code from the file's chosen class."""


def test_arbitrary_pickle_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, Payload())
    with pytest.raises(CheckpointError, match="weights_only"):
        TripoSR.from_pretrained(str(tmp_path))


def test_wrapped_state_dict_is_refused(tmp_path: Path, source: TripoSR) -> None:
    _write(tmp_path, {"state_dict": source.state_dict()})
    with pytest.raises(CheckpointError, match="plain dict"):
        TripoSR.from_pretrained(str(tmp_path))


def test_sha256_is_checked(tmp_path: Path, source: TripoSR) -> None:
    _write(tmp_path, source.state_dict())
    digest = hashlib.sha256((tmp_path / "model.ckpt").read_bytes()).hexdigest()
    TripoSR.from_pretrained(str(tmp_path), sha256=digest)
    with pytest.raises(CheckpointError, match="sha256"):
        TripoSR.from_pretrained(str(tmp_path), sha256="0" * 64)


def test_offline_and_uncached_raises_weights_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError) as info:
        TripoSR.from_pretrained("gen3d-tests/not-a-cached-repo")
    message = str(info.value)
    assert "huggingface-cli download gen3d-tests/not-a-cached-repo config.yaml model.ckpt" in message
    assert "tiny" in message


def test_directory_without_weights_raises_weights_unavailable(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(TINY_CONFIG_YAML)
    with pytest.raises(WeightsUnavailableError, match="model.ckpt"):
        TripoSR.from_pretrained(str(tmp_path))
