"""``TrellisImageTo3D``: our TRELLIS-image-large, image -> sparse structure -> structured latent -> assets.

1. ``condition``: DINOv2 tokens of the 518 px image (black backdrop, object premultiplied).
2. ``sample_structure``: the first flow denoises a 16^3 latent (CFG as one batch of 2), the
   structure decoder turns it into 64^3 occupancy logits, the occupied voxels are the structure.
3. ``sample_latent``: the second flow denoises 8 channels on those voxels; de-normalised with the
   release's mean and std, that is the structured latent.
4. ``decode_mesh`` / ``decode_gaussians``: the decoders' features -> a FlexiCubes mesh with vertex
   colours at 256^3, or 32 Gaussians per voxel.

Noise is drawn on the CPU from one generator seeded per request (structure noise, then latent
noise), as the reference does after ``torch.manual_seed``, so a seed gives the same asset on any
device and whatever else runs. With random weights a planted shape (``planted.py``) decides the
occupancy and the mesh's distance signs; every network still runs at its real size.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from gen3d.config import TRELLIS_IMAGE_SIZE
from gen3d.devices import building_on
from gen3d.models.trellis.config import TrellisConfig
from gen3d.models.trellis.dinov2 import DinoV2
from gen3d.models.trellis.gaussians import (
    GaussianRepresentationConfig,
    TrellisGaussians,
    to_gaussians,
)
from gen3d.models.trellis.layers import sdpa_priority
from gen3d.models.trellis.loading import Release, read_release
from gen3d.models.trellis.mesh_extract import SDF_CHANNELS, TrellisMesh, extract_mesh
from gen3d.models.trellis.planted import (
    PlantedShape,
    planted_corner_distance,
    planted_structure,
)
from gen3d.models.trellis.sampler import GuidedVelocity, SamplerConfig, sample
from gen3d.models.trellis.slat_decoders import SLatGaussianDecoder, SLatMeshDecoder
from gen3d.models.trellis.slat_flow import SLatFlowModel
from gen3d.models.trellis.sparse.tensor import SparseTensor
from gen3d.models.trellis.ss_decoder import SparseStructureDecoder, occupied_voxels
from gen3d.models.trellis.ss_flow import SparseStructureFlowModel
from gen3d.parts.checkpoints import load_strict

logger = logging.getLogger(__name__)

#: Conditioning image side (DINOv2 at 518 px: 37 x 37 patches of 14).
IMAGE_SIZE = TRELLIS_IMAGE_SIZE


@dataclass(frozen=True)
class TrellisOutput:
    """One request's products.

    Attributes:
        coords: [N, 3] int32 occupied voxels of the 64^3 structure.
        mesh: the FlexiCubes mesh, or None when not asked for.
        gaussians: the decoded Gaussians, or None when not asked for.
    """

    coords: torch.Tensor
    mesh: TrellisMesh | None
    gaussians: TrellisGaussians | None


def _stack_pair(a: SparseTensor, b: SparseTensor) -> SparseTensor:
    """[a; b] along the batch for a guided step, where TRELLIS always passes the same x twice."""
    if a is not b:
        raise ValueError("the sparse flow batches a state with itself (cond and uncond); got two states")
    return a.repeat_batch(2)


def _split_pair(v: SparseTensor) -> tuple[SparseTensor, SparseTensor]:
    """Inverse of ``_stack_pair``: the rows of the first and the second half of the batch."""
    half = v.feats.shape[0] // 2
    return (
        SparseTensor(v.coords[:half], v.feats[:half]),
        SparseTensor(v.coords[half:], v.feats[half:]),
    )


class TrellisImageTo3D(nn.Module):
    """TRELLIS-image-large; attribute names are ``pipeline.json``'s model keys.

    Args:
        cfg: the model (``TrellisConfig.official()``, ``.tiny()`` or ``.from_release``).
        plant: a planted shape for random weights (see ``planted.py``), None for real weights.
    """

    def __init__(self, cfg: TrellisConfig, plant: PlantedShape | None = None):
        super().__init__()
        self.cfg = cfg
        self.plant = plant
        self.conditioner = DinoV2(cfg.conditioner)
        self.sparse_structure_flow_model = SparseStructureFlowModel(cfg.sparse_structure_flow)
        self.sparse_structure_decoder = SparseStructureDecoder(cfg.sparse_structure_decoder)
        self.slat_flow_model = SLatFlowModel(cfg.slat_flow)
        self.slat_decoder_mesh = SLatMeshDecoder(cfg.mesh_decoder)
        self.slat_decoder_gs = SLatGaussianDecoder(cfg.gaussian_decoder)
        self.gaussian_representation = GaussianRepresentationConfig.from_reference_dict(
            cfg.gaussian_decoder.representation_config
        )
        #: What runs the first flow's steps instead of the flow itself: its CUDA graphs (``speed.py``).
        self.structure_flow_runner: Callable[..., torch.Tensor] | None = None
        #: SDPA kernels ``run`` may use, in priority order (``layers.sdpa_priority``; empty: PyTorch's).
        self.attention_backends: tuple[str, ...] = ()

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        cfg: TrellisConfig,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        plant: PlantedShape | None = None,
    ) -> "TrellisImageTo3D":
        """Random weights, built on ``device`` in ``dtype`` (norms still compute in float32)."""
        with building_on(device, dtype):
            model = cls(cfg, plant)
        return model.eval().requires_grad_(False)

    @classmethod
    def from_release(
        cls, release: Release, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> "TrellisImageTo3D":
        """Load every network strictly: exactly the release's keys and shapes, or a ``CheckpointError``."""
        with building_on("meta", dtype):
            model = cls(release.config)
        for key, state_dict in release.state_dicts.items():
            load_strict(model.get_submodule(key), state_dict)
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", **files: object
    ) -> "TrellisImageTo3D":
        """``read_release(**files)`` (repos, revisions, digests) then ``from_release``."""
        return cls.from_release(read_release(**files), dtype, device)  # type: ignore[arg-type]

    @property
    def device(self) -> torch.device:
        return self.sparse_structure_flow_model.pos_emb.device

    @property
    def dtype(self) -> torch.dtype:
        return self.sparse_structure_flow_model.input_layer.weight.dtype

    # --- the four steps -------------------------------------------------------------------------

    def condition(self, image: torch.Tensor) -> torch.Tensor:
        """DINOv2 condition tokens [B, T, C] of images [B, 3, 518, 518] in [0, 1] (black backdrop)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image: expected [B, 3, H, W] in [0, 1], got {tuple(image.shape)}")
        return self.conditioner.encode(image.to(self.device, self.dtype))

    def sample_structure(
        self, cond: torch.Tensor, generator: torch.Generator, sampler: SamplerConfig, image: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Occupied voxels [N, 4] int32 (batch, x, y, z) of the 64^3 structure, for a batch-1 condition.

        Args:
            cond: [1, T, C] condition tokens.
            generator: CPU generator for the noise.
            sampler: steps, guidance and time warp of the first flow.
            image: [3, H, W] conditioning image, for the ``silhouette`` planted shape.
        """
        flow = self.sparse_structure_flow_model
        grid = flow.cfg.resolution
        noise = torch.randn(1, flow.cfg.in_channels, grid, grid, grid, generator=generator)
        runner = self.structure_flow_runner or flow
        velocity = GuidedVelocity(runner, cond, torch.zeros_like(cond), sampler.cfg_strength)
        latent = sample(velocity, noise.to(self.device, self.dtype), sampler).samples
        logits = self.sparse_structure_decoder(latent)
        if self.plant is not None:
            return planted_structure(self.plant, logits.shape[-1], image).to(self.device)
        return occupied_voxels(logits)

    def sample_latent(
        self, cond: torch.Tensor, coords: torch.Tensor, generator: torch.Generator, sampler: SamplerConfig
    ) -> SparseTensor:
        """The de-normalised structured latent on ``coords`` [N, 4] (one item), [N, 8] features."""
        flow = self.slat_flow_model
        noise = torch.randn(coords.shape[0], flow.cfg.in_channels, generator=generator)
        x = SparseTensor(coords.to(self.device, torch.int32), noise.to(self.device, self.dtype))
        velocity = GuidedVelocity(flow, cond, torch.zeros_like(cond), sampler.cfg_strength, _stack_pair, _split_pair)
        latent = sample(velocity, x, sampler).samples
        std = torch.tensor(self.cfg.slat_std, device=self.device, dtype=self.dtype)
        mean = torch.tensor(self.cfg.slat_mean, device=self.device, dtype=self.dtype)
        return latent.replace(latent.feats * std + mean)

    def decode_mesh(self, slat: SparseTensor, image: torch.Tensor | None = None) -> TrellisMesh:
        """FlexiCubes mesh (vertex colours, TRELLIS's voxel frame) of one structured latent."""
        out = self.slat_decoder_mesh(slat)
        feats = out.feats
        resolution = self.cfg.mesh_decoder.resolution * 4
        if self.plant is not None:
            feats = feats.float().clone()
            feats[:, SDF_CHANNELS] = planted_corner_distance(self.plant, out.coords[:, 1:], resolution, image)
        return extract_mesh(out.coords[:, 1:], feats, resolution)

    def decode_gaussians(self, slat: SparseTensor) -> TrellisGaussians:
        """32 Gaussians per voxel of one structured latent, world units in [-0.5, 0.5]^3."""
        out = self.slat_decoder_gs(slat)
        return to_gaussians(
            out.coords[:, 1:], out.feats, self.gaussian_representation, self.slat_decoder_gs.offset_perturbation,
            self.cfg.gaussian_decoder.resolution,
        )  # fmt: skip

    @torch.inference_mode()
    def run(
        self,
        image: torch.Tensor,
        seed: int,
        structure_steps: int | None = None,
        latent_steps: int | None = None,
        structure_cfg: float | None = None,
        latent_cfg: float | None = None,
        mesh: bool = True,
        gaussians: bool = False,
    ) -> TrellisOutput:
        """Image [3, 518, 518] in [0, 1] -> structure, latent, and the asked-for products.

        Steps and guidance strengths default to the release's (``cfg.*_sampler``).
        """
        structure = replace(
            self.cfg.structure_sampler,
            steps=structure_steps or self.cfg.structure_sampler.steps,
            cfg_strength=self.cfg.structure_sampler.cfg_strength if structure_cfg is None else structure_cfg,
        )
        latent_sampler = replace(
            self.cfg.latent_sampler,
            steps=latent_steps or self.cfg.latent_sampler.steps,
            cfg_strength=self.cfg.latent_sampler.cfg_strength if latent_cfg is None else latent_cfg,
        )
        generator = torch.Generator().manual_seed(seed)
        with sdpa_priority(self.attention_backends):
            cond = self.condition(image[None])
            coords = self.sample_structure(cond, generator, structure, image)
            if coords.shape[0] == 0:
                return TrellisOutput(coords[:, 1:], None, None)
            slat = self.sample_latent(cond, coords, generator, latent_sampler)
            return TrellisOutput(
                coords=coords[:, 1:],
                mesh=self.decode_mesh(slat, image) if mesh else None,
                gaussians=self.decode_gaussians(slat) if gaussians else None,
            )
