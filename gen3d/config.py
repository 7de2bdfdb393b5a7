"""Typed stage configs and YAML presets (``configs/*.yaml``).

A preset is data: one mapping per stage name. ``load_preset`` reads it, applies overrides and
validates everything up front, so a misconfiguration fails at startup with a ``ValueError``.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gen3d.formats import (
    FACES_RANGE,
    RESOLUTION_RANGE,
    TEXTURE_SIZES,
    MeshLimits,
    MeshOptions,
    TextureMode,
)
from gen3d.resources import data_path
from gen3d.splat.validate import DEFAULT_SPLAT_COUNT, MIN_SPLAT_COUNT

CONFIG_DIR = data_path("configs")
#: Side of TRELLIS's conditioning image (DINOv2 at 37 x 37 patches of 14 px).
TRELLIS_IMAGE_SIZE = 518

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
            ``<root>/<versions key>/`` and loads the artifacts ``gen3d.service.precompile`` left there
            (see ``gen3d.parts.compile_cache``). None keeps torch's default cache under /tmp.
        fail_on_recompile: after ``warmup()``, any compile during a request raises instead of
            stalling the request for the compile (warm-up covers every allowed shape).
        max_batch_size: most requests (of equal steps and size) one pipeline call serves. The
            deployment batches what has queued (``@serve.batch``); each request's image is the one
            it gets alone. Warm-up compiles and captures every batch size from 1 to this.
        batch_wait_timeout_s: how long a batch waits for companions after its first request
            (0: take what has queued, never delay a lone request).
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
    max_batch_size: int = Field(default=1, ge=1, le=16)
    batch_wait_timeout_s: float = Field(default=0.0, ge=0.0, le=1.0)

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
        sha256: expected digest of the session's ONNX file (``real`` mode), checked on every start:
            rembg checks an md5 only when it downloads and uses a file already in place as it is.
        size: side of the square output image.
        foreground_ratio: share of the side the object spans after padding.
        backdrop: grey level the object is composited on: TripoSR was trained on 0.5 grey,
            TRELLIS on black (0.0, its crop premultiplies by alpha).
        min_foreground_fraction: below this share of opaque pixels the image has no object.
        post_process_mask: apply rembg's morphological mask clean-up (binarises the mask edge).
        threads: onnxruntime intra-op threads (None: onnxruntime's default, all cores); set it
            when several stages share the CPU.
    """

    device: str = "cpu"
    session: str
    model_path: str | None = None
    sha256: str | None = None
    size: int = Field(default=512, ge=16, le=4096)
    foreground_ratio: float = Field(default=0.85, gt=0.0, le=1.0)
    backdrop: float = Field(default=0.5, ge=0.0, le=1.0)
    min_foreground_fraction: float = Field(default=0.001, ge=0.0, lt=1.0)
    post_process_mask: bool = False
    threads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _custom_needs_path(self) -> "BackgroundConfig":
        if self.session == "u2net_custom" and self.mode == "real" and not self.model_path:
            raise ValueError("background: session u2net_custom needs model_path")
        return self


class TrellisOptions(BaseModel):
    """TRELLIS-image-large's files and the ranges of its per-request sampler options.

    Attributes:
        repo: HF repo or local directory with ``pipeline.json`` and ``ckpts/``.
        revision: pinned commit of ``repo``.
        conditioner_repo: DINOv2 ViT-L/14-reg weights in the Hugging Face layout.
        conditioner_revision: pinned commit of ``conditioner_repo``.
        sha256: file digests, keyed by ``pipeline.json`` model key or ``conditioner``.
        steps: Euler steps of each flow when a request names none (the release: 25).
        max_steps: largest ``ss_steps`` / ``slat_steps`` a request may ask for.
        max_cfg: largest guidance strength a request may ask for.
        compile: ``torch.compile`` the conditioner's and both flows' transformer blocks (the second
            flow's with its voxel count dynamic: one graph for every structure); warm-up compiles.
        cuda_graphs: replay the first flow's steps as CUDA graphs (its shapes never change); needs
            a CUDA device.
        attention: SDPA kernels the attention may use, in priority order (``cudnn``, ``flash``,
            ``efficient``, ``math``); empty leaves PyTorch's choice. A list none of whose kernels
            runs on the stage's device fails the build.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    repo: str = "microsoft/TRELLIS-image-large"
    revision: str | None = None
    conditioner_repo: str = "facebook/dinov2-with-registers-large"
    conditioner_revision: str | None = None
    sha256: dict[str, str] = {}
    steps: int = Field(default=25, ge=1)
    max_steps: int = Field(default=50, ge=1)
    max_cfg: float = Field(default=15.0, ge=0.0)
    compile: bool = False
    cuda_graphs: bool = False
    attention: tuple[Literal["cudnn", "flash", "efficient", "math"], ...] = ()

    @model_validator(mode="after")
    def _default_steps_allowed(self) -> "TrellisOptions":
        if self.steps > self.max_steps:
            raise ValueError(f"image_to_3d.trellis: steps {self.steps} exceeds max_steps {self.max_steps}")
        return self


class ImageTo3DConfig(StageConfig):
    """Image -> 3D settings: which model, and its files and options.

    Attributes:
        model: ``triposr`` (fast, a triplane field) or ``trellis`` (TRELLIS-image-large: sparse
            structure and structured latent, the field's quality model).
        repo: TripoSR's HF repo or local directory holding ``config.yaml`` and ``model.ckpt``.
        sha256: optional pin of TripoSR's ``model.ckpt``.
        trellis: TRELLIS's files and request ranges (``model: trellis``).
        precision: dtype of the networks (TripoSR: transformer and field query).
        mc_resolution: TripoSR's marching grid side: the default of a request's ``resolution``.
        max_resolution: the largest ``resolution`` a request may name (the tiny CPU preset keeps it
            small: the grid's cost grows with its cube).
        mc_threshold: TripoSR's density level of the surface.
        query_chunk: points per field-query batch (bounds peak memory).
        splat_count: TripoSR's gaussians sampled on the surface when a splat is requested
            (TRELLIS's splat is its own decoded gaussians, 32 per voxel).
    """

    model: Literal["triposr", "trellis"] = "triposr"
    trellis: TrellisOptions = TrellisOptions()
    repo: str = "stabilityai/TripoSR"
    revision: str | None = None
    sha256: str | None = None
    precision: Precision = "bf16"
    mc_resolution: int = Field(default=256, ge=RESOLUTION_RANGE[0], le=RESOLUTION_RANGE[1])
    max_resolution: int = Field(default=RESOLUTION_RANGE[1], ge=RESOLUTION_RANGE[0], le=RESOLUTION_RANGE[1])
    mc_threshold: float = 25.0
    query_chunk: int = 2**21
    splat_count: int = Field(default=DEFAULT_SPLAT_COUNT, ge=MIN_SPLAT_COUNT)

    @model_validator(mode="after")
    def _default_grid_allowed(self) -> "ImageTo3DConfig":
        if self.mc_resolution > self.max_resolution:
            raise ValueError(f"image_to_3d: mc_resolution {self.mc_resolution} exceeds max_resolution {self.max_resolution}")
        return self


class ExportConfig(StageConfig):
    """File export (CPU): mesh clean-up, decimation, UV unwrapping and the writers.

    The mesh fields are the defaults of a request's mesh options (``gen3d.formats.MeshOptions``).

    Attributes:
        faces: target triangle count of a mesh file.
        texture: ``vertex`` colours or a baked ``uv`` texture atlas.
        texture_size: atlas side in texels.
        texture_sizes: the atlas sides a request may name (a subset of ``TEXTURE_SIZES``).
        normalize: centre meshes and scale their largest side to 1.
        splat_count: gaussians sampled when a mesh (not gaussians) is exported as a splat.
        decimate_workers: processes that decimate a mesh of more than ``chunked_above`` faces in
            chunks (``gen3d.mesh.decimate_chunks``); 0 or 1: every mesh in one pass, in the stage's
            own process.
        chunked_above: faces above which a mesh is decimated in chunks (TRELLIS's FlexiCubes meshes
            have 300-450k; TripoSR's at grid 256 about 200k stay in one pass).
    """

    device: str = "cpu"
    faces: int = Field(default=20_000, ge=FACES_RANGE[0], le=FACES_RANGE[1])
    texture: TextureMode = "uv"
    texture_size: int = 1024
    texture_sizes: tuple[int, ...] = TEXTURE_SIZES
    normalize: bool = True
    splat_count: int = Field(default=DEFAULT_SPLAT_COUNT, ge=MIN_SPLAT_COUNT)
    decimate_workers: int = Field(default=8, ge=0)
    chunked_above: int = Field(default=250_000, ge=0)

    @model_validator(mode="after")
    def _texture_size_allowed(self) -> "ExportConfig":
        if not set(self.texture_sizes) <= set(TEXTURE_SIZES):
            raise ValueError(f"export: texture_sizes must be among {list(TEXTURE_SIZES)}, got {list(self.texture_sizes)}")
        if self.texture_size not in self.texture_sizes:
            raise ValueError(f"export: texture_size expected one of {list(self.texture_sizes)}, got {self.texture_size}")
        return self


class Preset(BaseModel):
    """All four stage configs; the content of one ``configs/<name>.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_to_image: TextToImageConfig
    background: BackgroundConfig
    image_to_3d: ImageTo3DConfig
    export: ExportConfig = ExportConfig()

    @model_validator(mode="after")
    def _framing_fits_the_model(self) -> "Preset":
        if self.image_to_3d.model == "trellis" and self.background.size != TRELLIS_IMAGE_SIZE:
            raise ValueError(
                f"background.size: TRELLIS (image_to_3d.model: trellis) conditions on {TRELLIS_IMAGE_SIZE} px images, "
                f"got {self.background.size}; see configs/quality.yaml for its framing"
            )
        return self

    def weights(self) -> dict[str, dict[str, Any]]:
        """Where each stage's weights come from, pins included (``GET /version`` reports it).

        Returns:
            Per stage: its ``mode``, and for ``real`` the repo or rembg session with the pinned
            ``revision`` and ``sha256`` (None where the preset pins none).
        """
        text, background, lift = self.text_to_image, self.background, self.image_to_3d
        sources: dict[str, dict[str, Any]] = {
            "text_to_image": {"mode": text.mode, "repo": text.repo, "revision": text.revision},
            "background": {"mode": background.mode, "session": background.session, "sha256": background.sha256},
        }
        if lift.model == "trellis":
            pins = lift.trellis.model_dump(include={"repo", "revision", "conditioner_repo", "conditioner_revision", "sha256"})
        else:
            pins = {"repo": lift.repo, "revision": lift.revision, "sha256": lift.sha256}
        sources["image_to_3d"] = {"mode": lift.mode, "model": lift.model, **pins}
        return sources

    def mesh_defaults(self) -> MeshOptions:
        """The mesh options a request gets for every field it leaves out."""
        return MeshOptions(
            faces=self.export.faces,
            texture=self.export.texture,
            texture_size=self.export.texture_size,
            resolution=self.image_to_3d.mc_resolution,
            normalize=self.export.normalize,
        )

    def mesh_limits(self) -> MeshLimits:
        """What a request's mesh options may ask for with this preset."""
        return MeshLimits(max_resolution=self.image_to_3d.max_resolution, texture_sizes=self.export.texture_sizes)

    def shape_model(self) -> "ShapeModel":
        """Which 3D model answers, and what a request may ask of its sampler."""
        trellis = self.image_to_3d.trellis
        return ShapeModel(self.image_to_3d.model, trellis.steps, trellis.max_steps, trellis.max_cfg)


@dataclass(frozen=True)
class ShapeModel:
    """The service's 3D model as requests see it.

    Attributes:
        name: ``triposr`` or ``trellis``.
        steps: TRELLIS's Euler steps per flow when a request names none.
        max_steps: the most ``ss_steps`` / ``slat_steps`` a request may ask for.
        max_cfg: the strongest ``ss_cfg`` / ``slat_cfg`` a request may ask for.
    """

    name: Literal["triposr", "trellis"] = "triposr"
    steps: int = 25
    max_steps: int = 50
    max_cfg: float = 15.0


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


def read_preset(name: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset's mapping, with the preset its ``base:`` key names merged under it.

    A preset that differs from another by a few settings says only those (``quality_tiny.yaml``
    is ``tiny.yaml`` with TRELLIS), so shared settings live in one file.

    Raises:
        ValueError: an unknown preset, or bases that name each other in a loop.
    """
    if name in chain:
        raise ValueError(f"preset bases form a loop: {' -> '.join((*chain, name))}")
    raw = yaml.safe_load(preset_path(name).read_text()) or {}
    base = raw.pop("base", None)
    return deep_merge(read_preset(base, (*chain, name)), raw) if base is not None else raw


def load_preset(name: str, overrides: dict[str, Any] | None = None) -> Preset:
    """Load ``configs/<name>.yaml`` (or a YAML path) over its base, merge ``overrides`` and validate."""
    return Preset.model_validate(deep_merge(read_preset(name), overrides or {}))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` items as a mapping; values are read as YAML (``false``, ``12``, ``null``).

    Raises:
        ValueError: an item without ``=``.
    """
    overrides = {}
    for item in items:
        name, separator, value = item.partition("=")
        if not separator:
            raise ValueError(f"--set: expected FIELD=VALUE, got {item!r}")
        overrides[name] = yaml.safe_load(value)
    return overrides
