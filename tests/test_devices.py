"""Device resolution: explicit, never a silent CPU fallback."""

import pytest
import torch

from gen3d.devices import cap_memory, cap_memory_gib, peak_memory_bytes, resolve_device


def test_cpu_resolves() -> None:
    assert resolve_device("cpu") == torch.device("cpu")


def test_malformed_device_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="device: expected a torch device string"):
        resolve_device("gpu-please")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CUDA-less error")
def test_cuda_without_cuda_fails_loudly() -> None:
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")


def test_memory_helpers_are_no_ops_on_cpu() -> None:
    cpu = torch.device("cpu")
    cap_memory(cpu, 0.5)
    cap_memory_gib(cpu, 17.0)
    assert peak_memory_bytes(cpu) == 0


@pytest.mark.gpu
def test_gib_cap_beyond_the_card_is_rejected() -> None:
    with pytest.raises(ValueError, match="gpu_memory_gib"):
        cap_memory_gib(resolve_device("cuda"), 10_000.0)
