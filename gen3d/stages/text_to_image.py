"""The ``text_to_image`` stage: a prompt to an RGB image with diffusers' FluxPipeline (FLUX.1-schnell).

Modes (``TextToImageConfig.mode``): ``real`` loads the public weights, ``tiny`` builds toy-sized
random models on the CPU for tests, ``random`` builds the full-size architecture with random
weights directly on the device for speed and memory measurements. All three run the same
pipeline call, so precision, compile and attention settings behave identically.

Start-up (``from_config`` then ``warmup``) is timed phase by phase in ``startup_s``. Compiled
code goes to the persistent, versioned cache of ``gen3d.parts.compile_cache`` when the config names
one; fp8 weights may be held as plain tensors (``gen3d.parts.float8_linear``) instead of torchao's
tensor subclass, with the same outputs. Once warm, a request that would compile raises instead.

Batches (``generate_batch``, up to ``max_batch_size`` requests of equal steps and size) give each
request the image it gets alone: its initial noise comes from its own seeded generator, and
nothing in the pipeline mixes samples (attention stays within a sample, fp8 activations are
scaled per token row, the VAE decodes one sample at a time). CUDA graphs and compiled code are
made per batch size at warm-up.
"""

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from diffusers import FluxPipeline

from gen3d.config import TextToImageConfig
from gen3d.devices import (
    CAPPED_ALLOCATOR_ENV,
    cap_memory_gib,
    peak_memory_bytes,
    reset_peak_memory,
    resolve_device,
)
from gen3d.errors import StageOutputError
from gen3d.models.flux.components import (
    build_components,
    check_float8_support,
    quantize_float8_,
)
from gen3d.models.flux.loading import DTYPES, load_pretrained_pipeline
from gen3d.parts.compile_cache import open_compile_cache
from gen3d.parts.cuda_graphs import graph_method_, ungraph_method_
from gen3d.parts.float8_linear import unwrap_float8_
from gen3d.results import GeneratedImage
from gen3d.stages.text_to_image_batch import ImageRequest, decode_per_sample_

logger = logging.getLogger(__name__)

#: The calls replayed as CUDA graphs: T5, each transformer step and the VAE decode. CLIP stays
#: eager: it is about a millisecond, and transformers' mask helpers may synchronise the host.
GRAPHED_CALLS: tuple[tuple[str, str], ...] = (("text_encoder_2", "forward"), ("transformer", "forward"), ("vae", "decode"))


def check_precision_support(cfg: TextToImageConfig, device: torch.device) -> None:
    """Fail at startup if an fp8 or CUDA-graph setting cannot run on ``device`` (never fall back silently)."""
    if "fp8" in (cfg.precision, cfg.text_encoder_precision):
        check_float8_support(device)
    if cfg.cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs: CUDA graphs need a CUDA device, got device {device}; set cuda_graphs: false")


def set_kernel_tuning(enabled: bool) -> None:
    """Switch inductor's coordinate-descent tuning of Triton kernels (process-wide, read at compile time).

    torchao switches it on whenever it quantises; the stage's ``kernel_tuning`` setting decides.
    """
    torch._inductor.config.coordinate_descent_tuning = enabled
    torch._inductor.config.coordinate_descent_check_all_directions = enabled


def compile_pipeline_(pipe: FluxPipeline, cfg: TextToImageConfig) -> None:
    """torch.compile the transformer's repeated blocks, and T5 and the VAE decoder as configured.

    Graphs are static per image size and are compiled by ``TextToImage.warmup``.
    """
    set_kernel_tuning(cfg.kernel_tuning)
    # Single blocks take two graphs per shape (their first input is a strided view), so lift
    # dynamo's limit to fit every allowed (width, height) pair at every batch size instead of
    # silently falling back to eager.
    shapes = len(cfg.allowed_sizes) ** 2 * cfg.max_batch_size
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


def float8_components(pipe: FluxPipeline, cfg: TextToImageConfig) -> list[torch.nn.Module]:
    """The pipeline's models the config puts in fp8: the transformer and/or T5."""
    chosen = ((pipe.transformer, cfg.precision), (pipe.text_encoder_2, cfg.text_encoder_precision))
    return [module for module, precision in chosen if precision == "fp8"]


def quantize_pipeline_(pipe: FluxPipeline, cfg: TextToImageConfig) -> None:
    """Apply the config's fp8 settings in place to a pipeline built from random weights."""
    for module in float8_components(pipe, cfg):
        quantize_float8_(module)


def plain_float8_(pipe: FluxPipeline, cfg: TextToImageConfig) -> None:
    """With ``fp8_weights: plain``, move torchao's fp8 weights into plain-tensor ``Float8Linear`` layers."""
    if cfg.fp8_weights == "plain":
        for module in float8_components(pipe, cfg):
            unwrap_float8_(module)


#: How much the tiny demo amplifies the prompt's pooled embedding (see ``amplify_prompt_``).
TINY_PROMPT_GAIN = 10.0


def amplify_prompt_(pipe: FluxPipeline, gain: float = TINY_PROMPT_GAIN) -> None:
    """Scale the transformer's pooled-text projection so a tiny random model's image follows the prompt.

    At random init the pooled CLIP embedding barely moves the tiny transformer (the mean pixel
    change between two prompts was 1.3-1.8 / 255 against 37 between two seeds), so two demo
    prompts gave near-identical assets; scaled by ``gain`` it moves the image visibly (13-18 / 255).
    Demo weights only: the full-size random and real models are left as they are.
    """
    embedder = pipe.transformer.time_text_embed.text_embedder.linear_2
    with torch.no_grad():
        embedder.weight.mul_(gain)
        embedder.bias.mul_(gain)


def random_pipeline(cfg: TextToImageConfig, device: torch.device) -> FluxPipeline:
    """A FluxPipeline with seeded random weights (``tiny`` or full size) in the base dtype, not yet fp8."""
    size = "tiny" if cfg.mode == "tiny" else "full"
    components = build_components(size, device, DTYPES[cfg.precision], seed=cfg.seed)
    # The config guarantees the text encoders share this base dtype, so one build dtype serves all.
    pipe = FluxPipeline(**components)
    if cfg.mode == "tiny":
        amplify_prompt_(pipe)
    return pipe


@contextlib.contextmanager
def timed(phases: dict[str, float], name: str, device: torch.device) -> Iterator[None]:
    """Add the seconds of the enclosed start-up phase, its GPU work finished, to ``phases[name]``."""
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    phases[name] = phases.get(name, 0.0) + time.perf_counter() - start


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
            f"{' '.join(f'{k}={v}' for k, v in CAPPED_ALLOCATOR_ENV.items())} to avoid fragmentation, or raise the cap"
        )
    cap_memory_gib(device, gib)
    reset_peak_memory(device)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> (H, W, 3) uint8; a non-finite image is a stage failure."""
    if not np.isfinite(image).all():
        raise StageOutputError("text_to_image: the generated image contains NaN or inf values")
    return (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def image_or_error(image: np.ndarray) -> GeneratedImage | StageOutputError:
    """One sample of the pipeline's output as the stage's result, or the error that fails only its request."""
    try:
        return GeneratedImage(image=to_uint8(image))
    except StageOutputError as err:
        return err


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
        #: Seconds per start-up phase (``weights``, ``fp8``, ``warmup``...), for logs and benchmarks.
        self.startup_s: dict[str, float] = {}
        self._warm = False
        # A service logs per request; the per-step progress bar would only flood the logs.
        pipe.set_progress_bar_config(disable=True)
        if cfg.attention_backend is not None:
            check_attention_backend(cfg.attention_backend)
            pipe.transformer.set_attention_backend(cfg.attention_backend.lower())
        if cfg.compile:
            compile_pipeline_(pipe, cfg)
        # Below the CUDA graph: a batch's graph replays one decode per sample.
        decode_per_sample_(pipe.vae)
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
        phases: dict[str, float] = {}
        if cfg.compile and cfg.compile_cache_dir is not None:
            with timed(phases, "compile_cache", device):
                open_compile_cache(cfg.compile_cache_dir, device)
        # Real weights become fp8 while diffusers loads them; random ones are quantised afterwards.
        with timed(phases, "weights", device):
            pipe = load_pretrained_pipeline(cfg, device) if cfg.mode == "real" else random_pipeline(cfg, device)
        with timed(phases, "fp8", device):
            if cfg.mode != "real":
                quantize_pipeline_(pipe, cfg)
            plain_float8_(pipe, cfg)
        logger.info("text_to_image: %s pipeline ready on %s in %.1f s", cfg.mode, device, sum(phases.values()))
        # The cap bounds serving, not loading: random fp8 passes through the bf16 weights first.
        cap_serving_memory(device, cfg.gpu_memory_gib)
        stage = cls(pipe, cfg, device)
        stage.startup_s.update(phases)
        return stage

    def check_request(self, steps: int, width: int, height: int) -> None:
        """Refuse settings outside the preset: the API edge checks requests, so reaching here is a bug.

        Raises:
            ValueError: naming the setting and the allowed values.
        """
        for name, value, allowed in (
            ("steps", steps, self.cfg.allowed_steps),
            ("width", width, self.cfg.allowed_sizes),
            ("height", height, self.cfg.allowed_sizes),
        ):
            if value not in allowed:
                raise ValueError(f"text_to_image: {name} {value!r} is not one of the preset's {allowed}")

    def generate(self, prompt: str, seed: int, steps: int, width: int, height: int) -> GeneratedImage:
        """Generate one image; the same prompt and seed give the same image on the same machine.

        The HTTP edge has validated the values (prompt length, seed range, allowed settings).

        Args:
            prompt: the text.
            seed: seeds the initial latent noise.
            steps: denoising steps, one of ``allowed_steps``.
            width: pixels, one of ``allowed_sizes``.
            height: pixels, one of ``allowed_sizes``.

        Returns:
            The (height, width, 3) uint8 image.

        Raises:
            ValueError: settings outside the preset.
            StageOutputError: a non-finite image.
        """
        (result,) = self.generate_batch([ImageRequest(prompt, seed, steps, width, height)])
        if isinstance(result, StageOutputError):
            raise result
        return result

    def generate_batch(self, requests: Sequence[ImageRequest]) -> list[GeneratedImage | StageOutputError]:
        """Generate one image per request in one pipeline call; each is the image its request gets alone.

        Args:
            requests: 1 to ``max_batch_size`` requests with equal steps, width and height.

        Returns:
            Per request, in order: its (height, width, 3) uint8 image, or the ``StageOutputError``
            of a non-finite image (which fails that request only).

        Raises:
            ValueError: an empty or oversized batch, mixed settings, or settings outside the preset.
        """
        if not 1 <= len(requests) <= self.cfg.max_batch_size:
            raise ValueError(f"text_to_image: a batch holds 1 to {self.cfg.max_batch_size} requests, got {len(requests)}")
        if len({request.settings for request in requests}) != 1:
            raise ValueError("text_to_image: a batch's requests must share steps, width and height (group_by_settings)")
        steps, width, height = requests[0].settings
        self.check_request(steps, width, height)
        start = time.perf_counter()
        generators = [torch.Generator(device=self.device).manual_seed(request.seed) for request in requests]
        # After warm-up every allowed shape is compiled, so a compile now would be a bug.
        no_compile = self._warm and self.cfg.fail_on_recompile
        stance = torch.compiler.set_stance("fail_on_recompile") if no_compile else contextlib.nullcontext()
        with torch.inference_mode(), stance:
            output = self.pipe(
                prompt=[request.prompt for request in requests],
                num_inference_steps=steps,
                width=width,
                height=height,
                # schnell is guidance-distilled: no embedded guidance, no classifier-free guidance.
                guidance_scale=0.0,
                max_sequence_length=self.cfg.max_sequence_length,
                generator=generators,
                output_type="np",
            )
        results = [image_or_error(image) for image in output.images]
        seconds = time.perf_counter() - start
        logger.debug("text_to_image: %d x %dx%d, %d steps in %.3f s", len(requests), width, height, steps, seconds)
        return results

    def warmup(self) -> None:
        """Run every allowed (width, height, steps) at every batch size once, so no request pays
        compile, capture or lazy-init cost."""
        for width in self.cfg.allowed_sizes:
            for height in self.cfg.allowed_sizes:
                for steps in self.cfg.allowed_steps:
                    for size in range(1, self.cfg.max_batch_size + 1):
                        start = time.perf_counter()
                        self.generate_batch([ImageRequest("warm-up", seed, steps, width, height) for seed in range(size)])
                        seconds = time.perf_counter() - start
                        logger.info(
                            "text_to_image warm-up %dx%d, %d steps, batch %d: %.2f s", width, height, steps, size, seconds
                        )
                        self.startup_s["warmup"] = self.startup_s.get("warmup", 0.0) + seconds
        self._warm = True
        phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.startup_s.items())
        logger.info("text_to_image: warm after %s", phases)

    def peak_memory_bytes(self) -> int:
        """Peak torch-allocated bytes on the stage's GPU since the pipeline was ready (0 on CPU)."""
        return peak_memory_bytes(self.device)
