"""Typed stage configs and YAML presets (``configs/*.yaml``).

A preset is data: one mapping per stage name. ``load_preset`` reads it, applies overrides and
validates everything up front, so a misconfiguration fails at startup with a ``ValueError``.
"""

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gen3d.formats import (
    FACES_RANGE,
    RESOLUTION_RANGE,
    TEXTURE_SIZES,
    MeshOptions,
    TextureMode,
)
from gen3d.splat.validate import DEFAULT_SPLAT_COUNT, MIN_SPLAT_COUNT

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

#: How weights are obtained: public checkpoints, tiny random, or full-size random.
Mode = Literal["real", "tiny", "random"]
Precision = Literal["fp32", "bf16", "fp16", "fp8"]


class StageConfig(BaseModel):
    """Settings every stage shares.

    Attributes:
        mode: ``real`` loads public weights, ``tiny`` builds tiny random models (CPU tests),
            ``random`` builds full-size random models (speed and memory measurements).
        device: torch device string. Never changed behind the user's back: a missing CUDA
            device is a startup error, not a silent CPU fallback.
        gpu_memory_gib: cap on this stage process's GPU memory, turned into
            ``torch.cuda.set_per_process_memory_fraction`` of whatever card it runs on, so the
            same preset proves a 24 GB budget on a bigger card (None: no cap).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = "real"
    device: str = "cuda"
    gpu_memory_gib: float | None = Field(default=None, gt=0.0)


class TextToImageConfig(StageConfig):
    """FLUX.1-schnell settings; ``width``/``height``/``steps`` are defaults, ``allowed_*`` bounds.

    Attributes:
        precision: transformer dtype; ``fp8`` is torchao float8 over bf16 (CUDA sm >= 8.9). The
            VAE runs in this dtype (bf16 for ``fp8``).
        text_encoder_precision: dtype of CLIP and T5; ``fp8`` quantizes T5 only. Must share
            ``precision``'s base dtype because the pipeline feeds the text embeddings to the
            transformer unconverted.
        compile: torch.compile the transformer's repeated blocks, and T5 unless
            ``compile_text_encoder`` is false. Shapes are static: ``warmup()`` compiles every
            allowed size, minutes per size on an H100.
        compile_text_encoder: with ``compile``, also compile T5 (whole). False skips T5's
            compile (174-260 s of start-up on an H100) for about 10 ms more per request (fp8 T5
            eager inside its CUDA graph); see BENCHMARKS.md.
        compile_vae: torch.compile the VAE decoder too.
        cuda_graphs: replay T5, each transformer step and the VAE decode as CUDA graphs, one per
            allowed size (CUDA only; captured by ``warmup()``). Removes the CPU launch overhead
            that otherwise dominates at 512 px.
        attention_backend: diffusers attention backend name (``native``, ``flash``,
            ``_native_cudnn``...); None keeps the default (torch SDPA).
        seed: seed of the random weights in ``tiny``/``random`` modes.
        fp8_weights: how fp8 layers hold their weights: ``torchao`` keeps torchao's
            ``Float8Tensor`` subclass; ``plain`` moves the same data and per-row scales into plain
            tensors of ``gen3d.parts.float8_linear.Float8Linear``, which calls the same
            ``torch._scaled_mm`` and gives the same outputs without a tensor subclass to trace.
        kernel_tuning: with ``compile``, let inductor tune every Triton kernel's launch settings
            by coordinate descent (torchao's recommended setting for fp8). The tuning runs on the
            first call and is cached with the kernels; false saves that start-up time.
        compile_cache_dir: root of the persistent compile caches (``~`` expanded); the stage uses
            ``<root>/<versions key>/`` and loads the artifacts ``scripts/precompile.py`` left there
            (see ``gen3d.parts.compile_cache``). None keeps torch's default cache under /tmp.
        fail_on_recompile: after ``warmup()``, any compile during a request raises instead of
            stalling the request for the compile (warm-up covers every allowed shape).
    """

    repo: str = "black-forest-labs/FLUX.1-schnell"
    revision: str | None = None
    precision: Precision = "bf16"
    text_encoder_precision: Precision = "bf16"
    compile: bool = False
    compile_text_encoder: bool = True
    compile_vae: bool = False
    cuda_graphs: bool = False
    attention_backend: str | None = None
    seed: int = 0
    width: int = 512
    height: int = 512
    steps: int = 4
    allowed_sizes: list[int] = [512]
    allowed_steps: list[int] = [3, 4]
    max_sequence_length: int = 256
    max_prompt_chars: int = 1000
    fp8_weights: Literal["torchao", "plain"] = "torchao"
    kernel_tuning: bool = True
    compile_cache_dir: str | None = None
    fail_on_recompile: bool = True

    @model_validator(mode="after")
    def _defaults_are_allowed(self) -> "TextToImageConfig":
        if self.width not in self.allowed_sizes or self.height not in self.allowed_sizes:
            raise ValueError(
                f"text_to_image: width/height {self.width}x{self.height} must be in allowed_sizes "
                f"{self.allowed_sizes}"
            )
        if self.steps not in self.allowed_steps:
            raise ValueError(f"text_to_image: steps {self.steps} must be in allowed_steps {self.allowed_steps}")
        return self

    @model_validator(mode="after")
    def _precisions_share_a_dtype(self) -> "TextToImageConfig":
        def base(precision: str) -> str:
            return "bf16" if precision == "fp8" else precision

        if base(self.precision) != base(self.text_encoder_precision):
            raise ValueError(
                f"text_to_image: text_encoder_precision {self.text_encoder_precision} must share the base dtype of "
                f"precision {self.precision} (fp8 counts as bf16), e.g. precision: fp8 with text_encoder_precision: "
                "bf16 or fp8"
            )
        return self


class BackgroundConfig(StageConfig):
    """Background removal with a *named* rembg session, then TripoSR preprocessing.

    Attributes:
        session: rembg session name (``u2net``, ``isnet-general-use``, ...) or ``u2net_custom``
            with ``model_path``. Required: rembg's implicit default is a non-commercial model.
        model_path: ONNX file for ``u2net_custom`` (the tiny preset writes one locally).
        size: side of the square output image.
        foreground_ratio: share of the side the object spans after padding.
        min_foreground_fraction: below this share of opaque pixels the image has no object.
        post_process_mask: apply rembg's morphological mask clean-up (binarises the mask edge).
        threads: onnxruntime intra-op threads (None: onnxruntime's default, all cores); set it
            when several stages share the CPU.
    """

    device: str = "cpu"
    session: str
    model_path: str | None = None
    size: int = Field(default=512, ge=16, le=4096)
    foreground_ratio: float = Field(default=0.85, gt=0.0, le=1.0)
    min_foreground_fraction: float = Field(default=0.001, ge=0.0, lt=1.0)
    post_process_mask: bool = False
    threads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _custom_needs_path(self) -> "BackgroundConfig":
        if self.session == "u2net_custom" and self.mode == "real" and not self.model_path:
            raise ValueError("background: session u2net_custom needs model_path")
        return self


class ImageTo3DConfig(StageConfig):
    """TripoSR settings.

    Attributes:
        repo: HF repo or local directory holding ``config.yaml`` and ``model.ckpt``.
        sha256: optional pin of ``model.ckpt``.
        size: ``tiny`` or ``full`` architecture for random modes (real uses the repo's config).
        precision: dtype of the transformer and the field query.
        mc_resolution: marching grid side: the default of a request's ``resolution``.
        mc_threshold: density level of the surface.
        query_chunk: points per field-query batch (bounds peak memory).
        splat_count: gaussians sampled on the surface when a splat is requested.
    """

    repo: str = "stabilityai/TripoSR"
    revision: str | None = None
    sha256: str | None = None
    precision: Precision = "bf16"
    mc_resolution: int = Field(default=256, ge=RESOLUTION_RANGE[0], le=RESOLUTION_RANGE[1])
    mc_threshold: float = 25.0
    query_chunk: int = 2**21
    splat_count: int = Field(default=DEFAULT_SPLAT_COUNT, ge=MIN_SPLAT_COUNT)


class ExportConfig(StageConfig):
    """File export (CPU): mesh clean-up, decimation, UV unwrapping and the writers.

    The mesh fields are the defaults of a request's mesh options (``gen3d.formats.MeshOptions``).

    Attributes:
        faces: target triangle count of a mesh file.
        texture: ``vertex`` colours or a baked ``uv`` texture atlas.
        texture_size: atlas side in texels.
        normalize: centre meshes and scale their largest side to 1.
        splat_count: gaussians sampled when a mesh (not gaussians) is exported as a splat.
    """

    device: str = "cpu"
    faces: int = Field(default=20_000, ge=FACES_RANGE[0], le=FACES_RANGE[1])
    texture: TextureMode = "uv"
    texture_size: int = 1024
    normalize: bool = True
    splat_count: int = Field(default=DEFAULT_SPLAT_COUNT, ge=MIN_SPLAT_COUNT)

    @model_validator(mode="after")
    def _texture_size_allowed(self) -> "ExportConfig":
        if self.texture_size not in TEXTURE_SIZES:
            raise ValueError(f"export: texture_size expected one of {list(TEXTURE_SIZES)}, got {self.texture_size}")
        return self


class Preset(BaseModel):
    """All four stage configs; the content of one ``configs/<name>.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_to_image: TextToImageConfig
    background: BackgroundConfig
    image_to_3d: ImageTo3DConfig
    export: ExportConfig = ExportConfig()

    def mesh_defaults(self) -> MeshOptions:
        """The mesh options a request gets for every field it leaves out."""
        return MeshOptions(
            faces=self.export.faces,
            texture=self.export.texture,
            texture_size=self.export.texture_size,
            resolution=self.image_to_3d.mc_resolution,
            normalize=self.export.normalize,
        )


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``overrides`` applied key by key (nested mappings merged, not replaced)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def preset_path(name: str) -> Path:
    """Resolve a preset name (``tiny``) or a YAML path to a file, with a clear error if absent."""
    candidate = Path(name)
    if candidate.suffix in {".yaml", ".yml"} and candidate.is_file():
        return candidate
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("serve"))
        raise ValueError(f"preset {name!r} not found; expected one of {known} or a path to a YAML file")
    return path


def load_preset(name: str, overrides: dict[str, Any] | None = None) -> Preset:
    """Load ``configs/<name>.yaml`` (or a YAML path), merge ``overrides`` and validate."""
    raw = yaml.safe_load(preset_path(name).read_text()) or {}
    return Preset.model_validate(deep_merge(raw, overrides or {}))
