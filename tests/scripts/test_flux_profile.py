"""scripts/flux_profile.py: kernel kinds by name, the busy-time union, and a tiny-preset run (CPU)."""

import json
from pathlib import Path

import pytest

from scripts import flux_profile


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        # Kernel names as CUPTI reports them on an H100 (fp8 rowwise GEMM, cuBLAS bf16, SDPA backends, inductor).
        ("void cutlass::device_kernel<f8f8bf16_rowwise_kernel<cutlass::float_e4m3_t>>", "GEMM fp8"),
        ("sm90_xmma_gemm_e4m3bf16_e4m3f32_f32_tn_n_tilesize128x128x128", "GEMM fp8"),
        ("nvjet_tst_192x192_64x3_2x1_v_bz_coopA_TNT", "GEMM bf16/fp32"),
        ("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_32x6_tn_align8>", "GEMM bf16/fp32"),
        ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x128x64", "attention"),
        ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>", "attention"),
        # Kernels seen in the random preset's profile on an H100 (fp8 rowwise GEMMs are cuBLAS "qq" nvjet kernels).
        ("nvjet_sm90_qqtst_128x128_128x6_4x2_h_bz_ovscale_bias_TNT", "GEMM fp8"),
        ("triton_red_fused__scaled_mm__to_copy_abs_amax_clamp_div_gelu_t_view_16", "fp8 activation scaling (Triton)"),
        ("triton_red_fused__fused_rms_norm__scaled_dot_product_cudnn_attention__to_copy_add_mul_neg_", "Triton fused"),
        ("void at::native::(anonymous namespace)::RowwiseMomentsCUDAKernel<c10::BFloat16>(long, c10:", "norm"),
        ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64_warpgr", "conv"),
        ("triton_per_fused__to_copy_native_layer_norm_mul_0", "Triton fused"),
        ("triton_poi_fused_add_mul_silu_1", "Triton fused"),
        ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", "elementwise"),
        ("Memcpy DtoD (Device -> Device)", "copy"),
        ("aten::_slow_conv2d_forward", "conv"),
        ("some_unknown_kernel", "other"),
    ],
)
def test_kernel_kind(name: str, kind: str) -> None:
    assert flux_profile.kernel_kind(name) == kind


def test_busy_time_counts_overlap_once() -> None:
    events = [("a", 0.0, 1000.0), ("b", 500.0, 1500.0), ("c", 3000.0, 3500.0)]
    assert flux_profile.busy_ms(events) == pytest.approx(2.0)
    assert flux_profile.busy_ms([]) == 0.0


def test_summary_per_image_and_shares() -> None:
    times = [("triton_poi_fused_add_0", 300.0, 1), ("triton_poi_fused_add_0", 300.0, 1), ("nvjet_tst_x", 1400.0, 1)]
    summary = flux_profile.summarise(times, images=2, top=1)
    assert summary["total_ms_per_image"] == pytest.approx(1.0)
    first, second = summary["kinds"]
    assert (first["name"], first["ms_per_image"], first["share"], first["count"]) == ("GEMM bf16/fp32", 0.7, 0.7, 1)
    assert (second["name"], second["count"]) == ("Triton fused", 2)
    assert [row["name"] for row in summary["top"]] == ["nvjet_tst_x"]


def test_tiny_run_writes_the_profile(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert flux_profile.main(["--out", str(tmp_path), "--preset", "tiny", "--calls", "2", "--top", "5"]) == 0
    report = json.loads((tmp_path / "flux_profile.json").read_text())
    assert report["source"] == "CPU operators, self time" and report["calls"] == 2
    kinds = {row["name"]: row for row in report["kinds"]}
    assert {"GEMM bf16/fp32", "attention", "conv"} <= set(kinds)  # the transformer's linears, SDPA, the VAE
    assert sum(row["share"] for row in report["kinds"]) == pytest.approx(1.0)
    assert sum(row["ms_per_image"] for row in report["kinds"]) == pytest.approx(report["total_ms_per_image"])
    assert len(report["top"]) == 5
    assert "| kind | ms per image |" in capsys.readouterr().out
