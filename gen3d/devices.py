"""Device resolution and GPU memory bookkeeping shared by the stages.

A stage is told its device by its config; it never picks one itself and never falls back to the
CPU when CUDA was asked for, so a misconfigured GPU deployment fails at startup, not slowly.
"""

import contextlib
import logging
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)

#: Config precision names of plain torch dtypes (fp8 is a quantisation on top of bf16, not a dtype).
TORCH_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Environment of a process that loads FLUX under a memory cap, read when CUDA initialises: the
#: cap counts reserved segments, and in-place fp8 quantisation leaves fixed-size ones partly used.
CAPPED_ALLOCATOR_ENV: dict[str, str] = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}


def resolve_device(name: str) -> torch.device:
    """Turn a device string from a config into a usable ``torch.device``.

    Args:
        name: torch device string (``cpu``, ``cuda``, ``cuda:1``).

    Returns:
        The device, checked to exist.

    Raises:
        ValueError: ``name`` is not a device string torch understands.
        RuntimeError: CUDA was requested but is unavailable, or the index is out of range.
    """
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device: expected a torch device string such as 'cpu' or 'cuda:0', got {name!r}") from err
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"device: {name!r} was requested but CUDA is not available (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}); set device: cpu explicitly to run on the CPU"
        )
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise RuntimeError(f"device: {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device("cuda", index)


def cap_memory(device: torch.device, fraction: float | None) -> None:
    """Limit this process to ``fraction`` of the GPU's memory (no-op for CPU or ``None``).

    Several replicas may share one card; the cap makes an over-budget replica fail with an
    out-of-memory error instead of starving its neighbours.

    Args:
        device: the stage's device.
        fraction: share of the card's total memory in (0, 1], or None for no cap.
    """
    if fraction is None or device.type != "cuda":
        return
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    total = torch.cuda.get_device_properties(device).total_memory
    logger.info("capped %s at %.2f of %.1f GiB", device, fraction, total / 2**30)


def cap_memory_gib(device: torch.device, gib: float | None) -> None:
    """Limit this process to ``gib`` GiB of the GPU, whatever the card's size (no-op for CPU or None).

    The same budget (say 18 GiB of a 24 GB card) can thus be proven on a bigger card.

    Raises:
        ValueError: ``gib`` is more than the card has.
    """
    if gib is None or device.type != "cuda":
        return
    total = torch.cuda.get_device_properties(device).total_memory
    if gib * 2**30 > total:
        raise ValueError(f"gpu_memory_gib: expected at most the card's {total / 2**30:.1f} GiB, got {gib}")
    cap_memory(device, gib * 2**30 / total)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak bytes allocated by torch on ``device`` since the last reset (0 on CPU)."""
    if device.type != "cuda":
        return 0
    return int(torch.cuda.max_memory_allocated(device))


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window on ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@contextlib.contextmanager
def building_on(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Create new parameters directly on ``device`` in ``dtype`` (no fp32 CPU copy first)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)
