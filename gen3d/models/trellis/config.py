"""TRELLIS-image-large as data: every network's config, both samplers and the latent normalisation.

``TrellisConfig.from_release`` reads the official files (``pipeline.json`` and each
``ckpts/<name>.json``); ``official()`` holds the same values without them, and ``tiny()`` the real
layer structure at widths and depths a CPU runs in seconds.
"""

from dataclasses import dataclass, replace
from typing import Any

from gen3d.models.trellis.dinov2 import DinoV2Config
from gen3d.models.trellis.sampler import SamplerConfig
from gen3d.models.trellis.slat_decoders import SLatDecoderConfig
from gen3d.models.trellis.slat_flow import SLatFlowConfig
from gen3d.models.trellis.ss_decoder import SparseStructureDecoderConfig
from gen3d.models.trellis.ss_flow import SparseStructureFlowConfig

#: ``pipeline.json`` model keys -> the network class each names, for the networks we load.
#: (The radiance-field decoder, ``slat_decoder_rf``, is implemented but not served: no output uses it.)
RELEASE_MODELS = {
    "sparse_structure_flow_model": "SparseStructureFlowModel",
    "sparse_structure_decoder": "SparseStructureDecoder",
    "slat_flow_model": "SLatFlowModel",
    "slat_decoder_mesh": "SLatMeshDecoder",
    "slat_decoder_gs": "SLatGaussianDecoder",
}
#: The conditioner ``pipeline.json`` names (torch hub), which we load from its Hugging Face copy.
IMAGE_COND_MODEL = "dinov2_vitl14_reg"
#: Per-channel statistics of the structured latent in TRELLIS-image-large's ``pipeline.json``.
SLAT_MEAN = (-2.1687545776367188, -0.004347046371549368, -0.13352349400520325, -0.08418072760105133,
             -0.5271206498146057, 0.7238689064979553, -1.1414450407028198, 1.2039363384246826)  # fmt: skip
SLAT_STD = (2.377650737762451, 2.386378288269043, 2.124418020248413, 2.1748552322387695,
            2.663944721221924, 2.371192216873169, 2.6217446327209473, 2.684523105621338)  # fmt: skip


@dataclass(frozen=True)
class TrellisConfig:
    """The whole image-to-3D model.

    Attributes:
        conditioner: DINOv2 ViT-L/14 with registers.
        sparse_structure_flow: the first flow (dense 16^3 latent).
        sparse_structure_decoder: 16^3 latent -> 64^3 occupancy logits.
        slat_flow: the second flow (sparse latent on the occupied voxels).
        mesh_decoder, gaussian_decoder: structured latent -> FlexiCubes features / Gaussians.
        structure_sampler, latent_sampler: the two Euler samplers (steps, guidance, time warp).
        slat_mean, slat_std: the sampled latent is ``x * std + mean`` before decoding.
    """

    conditioner: DinoV2Config
    sparse_structure_flow: SparseStructureFlowConfig
    sparse_structure_decoder: SparseStructureDecoderConfig
    slat_flow: SLatFlowConfig
    mesh_decoder: SLatDecoderConfig
    gaussian_decoder: SLatDecoderConfig
    structure_sampler: SamplerConfig
    latent_sampler: SamplerConfig
    slat_mean: tuple[float, ...] = SLAT_MEAN
    slat_std: tuple[float, ...] = SLAT_STD

    def __post_init__(self) -> None:
        channels = self.slat_flow.out_channels
        if len(self.slat_mean) != channels or len(self.slat_std) != channels:
            raise ValueError(
                f"slat_mean/slat_std: expected {channels} values each (the latent's channels), "
                f"got {len(self.slat_mean)} and {len(self.slat_std)}"
            )

    @classmethod
    def official(cls) -> "TrellisConfig":
        """TRELLIS-image-large as released (the values of its ``pipeline.json`` and ckpt JSONs)."""
        return cls(
            conditioner=DinoV2Config.official(),
            sparse_structure_flow=SparseStructureFlowConfig.official(),
            sparse_structure_decoder=SparseStructureDecoderConfig.official(),
            slat_flow=SLatFlowConfig.official(),
            mesh_decoder=SLatDecoderConfig.official("mesh"),
            gaussian_decoder=SLatDecoderConfig.official("gaussian"),
            structure_sampler=SamplerConfig.sparse_structure(),
            latent_sampler=SamplerConfig.structured_latent(),
        )

    @classmethod
    def tiny(cls) -> "TrellisConfig":
        """Every layer type at small widths and depths, few sampler steps: CPU tests and demos.

        The parts agree with each other as the official ones do: the flows read the conditioner's
        width, and the decoders' grid is the structure decoder's output grid.
        """
        conditioner = DinoV2Config.tiny()
        # A 4^3 latent decoded to a 16^3 structure: demos of ~10^3 voxels, whose 64^3 mesh grid a CPU
        # decodes in about a second.
        structure_flow = replace(SparseStructureFlowConfig.tiny(), cond_channels=conditioner.embed_dim, resolution=4)
        structure_decoder = SparseStructureDecoderConfig.tiny()
        grid = structure_flow.resolution * structure_decoder.upscale
        return cls(
            conditioner=conditioner,
            sparse_structure_flow=structure_flow,
            sparse_structure_decoder=structure_decoder,
            slat_flow=replace(SLatFlowConfig.tiny(), cond_channels=conditioner.embed_dim, resolution=grid),
            mesh_decoder=replace(SLatDecoderConfig.tiny("mesh"), resolution=grid),
            gaussian_decoder=replace(SLatDecoderConfig.tiny("gaussian"), resolution=grid),
            structure_sampler=replace(SamplerConfig.sparse_structure(), steps=2),
            latent_sampler=replace(SamplerConfig.structured_latent(), steps=2),
        )

    @classmethod
    def from_release(
        cls, pipeline: dict[str, Any], checkpoints: dict[str, dict[str, Any]], conditioner: dict[str, Any]
    ) -> "TrellisConfig":
        """Read the release's ``pipeline.json`` and ckpt JSONs, and the conditioner's ``config.json``.

        Args:
            pipeline: ``pipeline.json`` as loaded ({"name", "args": {...}}).
            checkpoints: ``pipeline.json`` model key -> that model's ckpt JSON ({"name", "args"}).
            conditioner: the Hugging Face DINOv2 ``config.json``.

        Raises:
            ValueError: another pipeline, a missing or unexpected network, or bad arguments.
        """
        if pipeline.get("name") != "TrellisImageTo3DPipeline":
            raise ValueError(f"pipeline.json name: expected 'TrellisImageTo3DPipeline', got {pipeline.get('name')!r}")
        args = pipeline["args"]
        if args.get("image_cond_model") != IMAGE_COND_MODEL:
            raise ValueError(f"image_cond_model: expected {IMAGE_COND_MODEL!r}, got {args.get('image_cond_model')!r}")
        for key, name in RELEASE_MODELS.items():
            found = checkpoints.get(key, {}).get("name")
            if found not in (name, f"Elastic{name}"):
                raise ValueError(f"{key}: expected a {name} checkpoint, got {found!r}")
        normalization = args["slat_normalization"]
        return cls(
            conditioner=DinoV2Config.from_hf_config(conditioner),
            sparse_structure_flow=SparseStructureFlowConfig.from_reference_dict(
                checkpoints["sparse_structure_flow_model"]["args"]
            ),
            sparse_structure_decoder=SparseStructureDecoderConfig.from_reference_dict(
                checkpoints["sparse_structure_decoder"]["args"]
            ),
            slat_flow=SLatFlowConfig.from_reference_dict(checkpoints["slat_flow_model"]["args"]),
            mesh_decoder=SLatDecoderConfig.from_reference_dict(checkpoints["slat_decoder_mesh"]["args"]),
            gaussian_decoder=SLatDecoderConfig.from_reference_dict(checkpoints["slat_decoder_gs"]["args"]),
            structure_sampler=SamplerConfig.from_reference_dict(args["sparse_structure_sampler"]),
            latent_sampler=SamplerConfig.from_reference_dict(args["slat_sampler"]),
            slat_mean=tuple(float(v) for v in normalization["mean"]),
            slat_std=tuple(float(v) for v in normalization["std"]),
        )
