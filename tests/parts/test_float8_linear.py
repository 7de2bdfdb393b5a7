"""gen3d.parts.float8_linear on the CPU: plain-tensor fp8 layers give torchao's outputs bit for bit.

torch runs ``_scaled_mm`` for e4m3 on the CPU too, so the comparison needs no GPU; only torchao's
quantiser refuses the CPU up front (a hardware check for its *kernels*), which the fixture lifts.
"""

import numpy as np
import pytest
import torch
from torch import nn

from gen3d.config import TextToImageConfig
from gen3d.parts.float8_linear import Float8Linear, unwrap_float8_
from gen3d.stages.text_to_image import (
    TextToImage,
    plain_float8_,
    quantize_pipeline_,
    random_pipeline,
)

PROMPT = "a red wooden cube"


@pytest.fixture
def cpu_float8(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let torchao quantise on the CPU (its hardware check guards GPU kernels this test does not use)."""
    monkeypatch.setattr("torchao.quantization.quant_api._check_hardware_support", lambda granularity: None)


def quantized_stack(granularity: str = "row") -> nn.Sequential:
    """Linears with and without bias, plus one torchao leaves in bf16 (8 outputs: not a multiple of 16)."""
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        PerRow,
        PerTensor,
        quantize_,
    )

    torch.manual_seed(0)
    layers = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32, bias=False), nn.Linear(32, 8))
    layers = layers.to(torch.bfloat16).requires_grad_(False)
    scales = PerRow() if granularity == "row" else PerTensor()
    quantize_(layers, Float8DynamicActivationFloat8WeightConfig(granularity=scales))
    return layers


@pytest.mark.usefixtures("cpu_float8")
def test_plain_layers_give_torchao_outputs_bit_for_bit() -> None:
    torchao_layers = quantized_stack()
    plain = quantized_stack()
    assert unwrap_float8_(plain) == 2
    assert [type(layer) for layer in plain] == [Float8Linear, nn.GELU, Float8Linear, nn.Linear]
    assert plain[0].weight is None and plain[2].bias is None and plain[0].qdata.dtype == torch.float8_e4m3fn
    x = torch.randn(3, 17, 64, dtype=torch.bfloat16) * 4
    with torch.inference_mode():
        expected = torchao_layers(x)
        got = plain(x)
    assert got.shape == (3, 17, 8) and got.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.usefixtures("cpu_float8")
def test_a_samples_rows_are_scaled_alone_whatever_shares_the_batch() -> None:
    # FLUX batches requests: per-row (per-token) activation scales keep each request's fp8 products
    # its own, even beside a companion 1000x larger (a per-tensor scale would take the companion's maximum).
    plain = quantized_stack()
    unwrap_float8_(plain)
    sample = torch.randn(1, 17, 64, dtype=torch.bfloat16)
    loud = torch.randn(2, 17, 64, dtype=torch.bfloat16) * 1000
    with torch.inference_mode():
        alone = plain(sample)
        batched = plain(torch.cat([loud[:1], sample, loud[1:]]))[1:2]
    torch.testing.assert_close(batched, alone, rtol=0, atol=0)


@pytest.mark.usefixtures("cpu_float8")
def test_compiled_plain_layers_give_compiled_torchao_outputs() -> None:
    torchao_layers = quantized_stack()
    plain = quantized_stack()
    unwrap_float8_(plain)
    x = torch.randn(2, 16, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        expected = torch.compile(torchao_layers, fullgraph=True, dynamic=False)(x)
        got = torch.compile(plain, fullgraph=True, dynamic=False)(x)
    # Both lower to the same ATen ops, so inductor fuses them alike (compiled differs from eager).
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.usefixtures("cpu_float8")
def test_other_float8_layouts_are_refused_naming_the_layer() -> None:
    per_tensor = quantized_stack(granularity="tensor")
    expected = r"fp8_weights: plain supports .* layer '0' has \['weight is not scaled per row'"
    with pytest.raises(ValueError, match=expected):
        unwrap_float8_(per_tensor)


def fp8_pipeline_image(fp8_weights: str) -> tuple[np.ndarray, TextToImage]:
    """The tiny pipeline in fp8 (built past from_config, whose device check refuses fp8 on a CPU)."""
    cfg = TextToImageConfig(
        mode="tiny", device="cpu", precision="fp8", text_encoder_precision="fp8", fp8_weights=fp8_weights,
        width=32, height=32, allowed_sizes=[32], steps=3, allowed_steps=[3], max_sequence_length=16,
    )
    pipe = random_pipeline(cfg, torch.device("cpu"))
    quantize_pipeline_(pipe, cfg)
    plain_float8_(pipe, cfg)
    stage = TextToImage(pipe, cfg, torch.device("cpu"))
    return stage.generate(PROMPT, seed=3, steps=3, width=32, height=32).image, stage


@pytest.mark.usefixtures("cpu_float8")
def test_plain_pipeline_gives_the_torchao_image() -> None:
    from torchao.quantization import Float8Tensor

    expected, _ = fp8_pipeline_image("torchao")
    image, stage = fp8_pipeline_image("plain")
    np.testing.assert_array_equal(image, expected)
    for name in ("transformer", "text_encoder_2"):
        module = getattr(stage.pipe, name)
        assert any(isinstance(layer, Float8Linear) for layer in module.modules()), name
        assert not any(isinstance(tensor, Float8Tensor) for tensor in module.parameters()), name
        # The pipeline casts embeddings to these: fp8 storage must not leak into them.
        assert module.dtype == torch.bfloat16, name
