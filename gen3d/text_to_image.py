"""The ``text_to_image`` stage: a prompt to an RGB image with diffusers' FluxPipeline (FLUX.1-schnell).

Modes (``TextToImageConfig.mode``): ``real`` loads the public weights, ``tiny`` builds toy-sized
random models on the CPU for tests, ``random`` builds the full-size architecture with random
weights directly on the device for speed and memory measurements. All three run the same
pipeline call, so precision, compile and attention settings behave identically.
"""

import logging
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import FluxPipeline

from gen3d.api import check_prompt, check_seed, check_text_settings
from gen3d.config import TextToImageConfig
from gen3d.cuda_graphs import graph_method_, ungraph_method_
from gen3d.devices import TORCH_DTYPES, cap_memory_gib, peak_memory_bytes, reset_peak_memory, resolve_device
from gen3d.errors import InputError, StageOutputError, WeightsUnavailableError
from gen3d.flux_components import (
    build_components,
    check_float8_support,
    pipeline_quantization_config,
    quantize_float8_,
)
from gen3d.results import GeneratedImage

logger = logging.getLogger(__name__)

#: Storage dtype per precision; fp8 weights are quantized from bf16 and compute around bf16.
DTYPES = {**TORCH_DTYPES, "fp8": torch.bfloat16}


#: The calls replayed as CUDA graphs: T5, each transformer step and the VAE decode. CLIP stays
#: eager: it is about a millisecond, and transformers' mask helpers may synchronise the host.
GRAPHED_CALLS: tuple[tuple[str, str], ...] = (("text_encoder_2", "forward"), ("transformer", "forward"), ("vae", "decode"))


def check_precision_support(cfg: TextToImageConfig, device: torch.device) -> None:
    """Fail at startup if an fp8 or CUDA-graph setting cannot run on ``device`` (never fall back silently)."""
    if "fp8" in (cfg.precision, cfg.text_encoder_precision):
        check_float8_support(device)
    if cfg.cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs: CUDA graphs need a CUDA device, got device {device}; set cuda_graphs: false")


def compile_pipeline_(pipe: FluxPipeline, cfg: TextToImageConfig) -> None:
    """torch.compile the transformer's repeated blocks, and T5 and the VAE decoder as configured.

    Graphs are static per image size and are compiled by ``TextToImage.warmup``.
    """
    # Single blocks take two graphs per size (their first input is a strided view), so lift
    # dynamo's limit to fit every allowed (width, height) pair instead of silently falling back to eager.
    shapes = len(cfg.allowed_sizes) ** 2
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 2 * shapes + 2)
    pipe.transformer.compile_repeated_blocks(fullgraph=True, dynamic=False)
    if cfg.compile_text_encoder:
        # T5 always sees max_sequence_length tokens; eager fp8 T5 is 4x slower than compiled. Its
        # forward is compiled rather than the module so that a CUDA graph can wrap the compiled call.
        encoder = pipe.text_encoder_2
        encoder.forward = torch.compile(encoder.forward, dynamic=False)
    if cfg.compile_vae:
        pipe.vae.decoder.compile(dynamic=False)


def graph_pipeline_(pipe: FluxPipeline) -> None:
    """Replay T5, the transformer and the VAE decode as CUDA graphs sharing one memory pool."""
    pool = torch.cuda.graph_pool_handle()
    for component, method in GRAPHED_CALLS:
        graph_method_(getattr(pipe, component), method, f"{component}.{method}", pool)


def ungraph_pipeline_(pipe: FluxPipeline) -> None:
    """Undo :func:`graph_pipeline_` (benchmarks compare graphed and plain calls on the same models)."""
    for component, method in GRAPHED_CALLS:
        ungraph_method_(getattr(pipe, component), method)


def check_attention_backend(name: str | None) -> None:
    """Reject an unknown diffusers attention backend before any weights are built.

    Raises:
        ValueError: ``name`` is not one of diffusers' ``AttentionBackendName`` values.
    """
    if name is None:
        return
    from diffusers.models.attention_dispatch import AttentionBackendName

    known = sorted(backend.value for backend in AttentionBackendName)
    if name.lower() not in known:
        raise ValueError(f"attention_backend: expected one of {known} or null, got {name!r}")


def fetch_hint(repo: str) -> str:
    """How to make ``repo``'s weights available, and the offline alternative."""
    return (
        f"fetch them with `hf download {repo}` (older huggingface_hub: `huggingface-cli download {repo}`). "
        "FLUX.1-schnell is Apache-2.0, but its Hugging Face repo is gated: accept its terms on the model page "
        "and log in (`hf auth login` or HF_TOKEN) first. Without weights, use the tiny preset (mode: tiny) "
        "or mode: random."
    )


def ensure_weights_reachable(repo: str, revision: str | None) -> None:
    """Return if ``repo`` is a local folder, is in the HF cache, or the Hub answers; else raise at once.

    Raises:
        WeightsUnavailableError: not cached and offline (HF_HUB_OFFLINE) or the Hub is unreachable.
    """
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if Path(repo).is_dir():  # a local copy of the repo: from_pretrained reads it directly
        return
    try:
        snapshot_download(repo, revision=revision, local_files_only=True, allow_patterns=["model_index.json"])
        return
    except LocalEntryNotFoundError:
        pass
    if constants.is_offline_mode():
        raise WeightsUnavailableError(
            f"text_to_image: weights of {repo} are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
            f"and HF_HUB_OFFLINE is set; {fetch_hint(repo)}"
        )
    try:
        HfApi().model_info(repo, revision=revision, timeout=10)
    # Any probe failure (DNS, TLS, HTTP 4xx/5xx from the Hub's client) means no download can start now.
    except Exception as err:  # noqa: BLE001
        raise WeightsUnavailableError(
            f"text_to_image: weights of {repo} are not cached and the Hub cannot be reached ({err}); {fetch_hint(repo)}"
        ) from err


def load_pretrained_pipeline(cfg: TextToImageConfig, device: torch.device) -> FluxPipeline:
    """``FluxPipeline.from_pretrained`` with fp8 applied at load time by diffusers' torchao quantizer.

    Downloads show huggingface_hub's progress bars. On CUDA the weights stream straight to the GPU.
    """
    ensure_weights_reachable(cfg.repo, cfg.revision)
    quantization = pipeline_quantization_config(
        transformer=cfg.precision == "fp8", text_encoder_2=cfg.text_encoder_precision == "fp8"
    )
    device_map = None
    if device.type == "cuda":
        # diffusers' pipeline device_map accepts only the bare "cuda", i.e. the current device.
        torch.cuda.set_device(device)
        device_map = "cuda"
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        pipe = FluxPipeline.from_pretrained(
            cfg.repo,
            revision=cfg.revision,
            torch_dtype=DTYPES[cfg.precision],
            quantization_config=quantization,
            device_map=device_map,
        )
    # GatedRepoError is a RepositoryNotFoundError: the usual case is terms not accepted or no token.
    except (RepositoryNotFoundError, LocalEntryNotFoundError) as err:
        raise WeightsUnavailableError(f"text_to_image: cannot download {cfg.repo} ({err}); {fetch_hint(cfg.repo)}") from err
    if device_map is None:
        pipe.to(device)
    return pipe


def quantize_pipeline_(pipe: FluxPipeline, cfg: TextToImageConfig) -> None:
    """Apply the config's fp8 settings in place to a pipeline built from random weights."""
    if cfg.precision == "fp8":
        quantize_float8_(pipe.transformer)
    if cfg.text_encoder_precision == "fp8":
        quantize_float8_(pipe.text_encoder_2)


def random_pipeline(cfg: TextToImageConfig, device: torch.device) -> FluxPipeline:
    """A FluxPipeline with seeded random weights (``tiny`` or full size), already in its precision."""
    size = "tiny" if cfg.mode == "tiny" else "full"
    components = build_components(size, device, DTYPES[cfg.precision], seed=cfg.seed)
    # The config guarantees the text encoders share this base dtype, so one build dtype serves all.
    pipe = FluxPipeline(**components)
    quantize_pipeline_(pipe, cfg)
    return pipe


def cap_serving_memory(device: torch.device, gib: float | None) -> None:
    """Release load-time buffers, cap the process at ``gib`` and start the peak-memory window.

    Raises:
        ValueError: the loaded pipeline alone already exceeds the cap.
    """
    if device.type != "cuda":
        return
    torch.cuda.empty_cache()
    # The cap counts the allocator's reserved segments, not just live tensors: in-place fp8
    # quantisation leaves partly used bf16 segments behind unless segments are expandable.
    reserved = torch.cuda.memory_reserved(device)
    if gib is not None and reserved > gib * 2**30:
        raise ValueError(
            f"gpu_memory_gib: the loaded pipeline holds {torch.cuda.memory_allocated(device) / 2**30:.1f} GiB "
            f"({reserved / 2**30:.1f} GiB reserved), more than the cap {gib}; start the process with "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation, or raise the cap"
        )
    cap_memory_gib(device, gib)
    reset_peak_memory(device)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> (H, W, 3) uint8; a non-finite image is a stage failure."""
    if not np.isfinite(image).all():
        raise StageOutputError("text_to_image: the generated image contains NaN or inf values")
    return (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)


class TextToImage:
    """FLUX.1-schnell text-to-image stage.

    Args:
        pipe: a FluxPipeline already on ``device`` and in the config's precision (fp8 applied).
        cfg: the stage config; attention backend, compile and CUDA graphs are applied here.
        device: the pipeline's device.
    """

    def __init__(self, pipe: FluxPipeline, cfg: TextToImageConfig, device: torch.device) -> None:
        self.pipe = pipe
        self.cfg = cfg
        self.device = device
        # A service logs per request; the per-step progress bar would only flood the logs.
        pipe.set_progress_bar_config(disable=True)
        if cfg.attention_backend is not None:
            check_attention_backend(cfg.attention_backend)
            pipe.transformer.set_attention_backend(cfg.attention_backend.lower())
        if cfg.compile:
            compile_pipeline_(pipe, cfg)
        if cfg.cuda_graphs:
            graph_pipeline_(pipe)

    @classmethod
    def from_config(cls, cfg: TextToImageConfig) -> "TextToImage":
        """Build the stage: check the device and settings, then load or build the pipeline.

        Raises:
            RuntimeError: CUDA requested but unavailable.
            ValueError: fp8 on a device without float8 support, or an unknown attention backend.
            WeightsUnavailableError: ``real`` mode without cached weights or network.
        """
        device = resolve_device(cfg.device)
        check_precision_support(cfg, device)
        check_attention_backend(cfg.attention_backend)
        start = time.perf_counter()
        if cfg.mode == "real":
            pipe = load_pretrained_pipeline(cfg, device)
        else:
            pipe = random_pipeline(cfg, device)
        logger.info("text_to_image: %s pipeline ready on %s in %.1f s", cfg.mode, device, time.perf_counter() - start)
        # The cap bounds serving, not loading: random fp8 passes through the bf16 weights first.
        cap_serving_memory(device, cfg.gpu_memory_gib)
        return cls(pipe, cfg, device)

    def check_inputs(
        self, prompt: str, seed: int, steps: int | None, width: int | None, height: int | None
    ) -> tuple[int, int, int]:
        """Validate a request and fill defaults.

        Returns:
            ``(steps, width, height)`` with the config's defaults for None.

        Raises:
            InputError: naming the field, what was expected and what was got.
        """
        if not isinstance(prompt, str):
            raise InputError("prompt", f"expected text, got {type(prompt).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputError("seed", f"expected an integer, got {seed!r}")
        check_prompt(prompt, self.cfg.max_prompt_chars)
        check_seed(seed)
        return check_text_settings(self.cfg, steps, width, height)

    def generate(
        self, prompt: str, seed: int, steps: int | None = None, width: int | None = None, height: int | None = None
    ) -> GeneratedImage:
        """Generate one image; the same prompt and seed give the same image on the same machine.

        Args:
            prompt: the text, at most ``max_prompt_chars`` characters.
            seed: in [0, 2**32 - 1]; seeds the initial latent noise.
            steps: denoising steps (default ``cfg.steps``), one of ``allowed_steps``.
            width: pixels (default ``cfg.width``), one of ``allowed_sizes``.
            height: pixels (default ``cfg.height``), one of ``allowed_sizes``.

        Returns:
            The (height, width, 3) uint8 image and the wall time.
        """
        steps, width, height = self.check_inputs(prompt, seed, steps, width, height)
        start = time.perf_counter()
        generator = torch.Generator(device=self.device).manual_seed(seed)
        with torch.inference_mode():
            output = self.pipe(
                prompt=prompt,
                num_inference_steps=steps,
                width=width,
                height=height,
                # schnell is guidance-distilled: no embedded guidance, no classifier-free guidance.
                guidance_scale=0.0,
                max_sequence_length=self.cfg.max_sequence_length,
                generator=generator,
                output_type="np",
            )
        image = to_uint8(output.images[0])
        seconds = time.perf_counter() - start
        logger.debug("text_to_image: %dx%d, %d steps in %.3f s", width, height, steps, seconds)
        return GeneratedImage(image=image, seconds=seconds)

    def warmup(self) -> None:
        """Run every allowed (width, height, steps) once so no request pays compile, capture or lazy-init cost."""
        for width in self.cfg.allowed_sizes:
            for height in self.cfg.allowed_sizes:
                for steps in self.cfg.allowed_steps:
                    result = self.generate("warm-up", seed=0, steps=steps, width=width, height=height)
                    logger.info("text_to_image warm-up %dx%d, %d steps: %.2f s", width, height, steps, result.seconds)

    def peak_memory_bytes(self) -> int:
        """Peak torch-allocated bytes on the stage's GPU since the pipeline was ready (0 on CPU)."""
        return peak_memory_bytes(self.device)
