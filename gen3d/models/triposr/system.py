"""``TripoSR``: image -> scene code (triplane) -> field queries and meshes.

``forward`` produces scene codes; products (``query``, ``extract_mesh``) stay apart from it.
"""

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gen3d.devices import building_on
from gen3d.errors import StageOutputError
from gen3d.mesh.isosurface import marching_cubes
from gen3d.models.triposr import field
from gen3d.models.triposr.backbone import Transformer1D
from gen3d.models.triposr.config import TripoSRConfig
from gen3d.models.triposr.decoder import NeRFMLP
from gen3d.models.triposr.image_tokenizer import DINOSingleImageTokenizer
from gen3d.models.triposr.loading import read_state_dict, resolve_files, to_legacy_vit_names
from gen3d.models.triposr.post_processor import TriplaneUpsampleNetwork
from gen3d.models.triposr.tokenizer import Triplane1DTokenizer
from gen3d.parts.checkpoints import load_strict
from gen3d.results import MeshAsset

logger = logging.getLogger(__name__)

#: Points per decoder batch: large enough to keep the GPU busy, small enough for ~1 GiB of activations.
DEFAULT_CHUNK = 2**21
ImageInput = torch.Tensor | Sequence[object]


class TripoSR(nn.Module):
    """TripoSR; attribute names are the checkpoint's key prefixes.

    Args:
        cfg: architecture (``TripoSRConfig.official()`` or ``.tiny()``).
    """

    def __init__(self, cfg: TripoSRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_tokenizer = DINOSingleImageTokenizer(cfg.image_tokenizer)
        self.tokenizer = Triplane1DTokenizer(cfg.tokenizer)
        self.backbone = Transformer1D(cfg.backbone)
        self.post_processor = TriplaneUpsampleNetwork(cfg.post_processor)
        self.decoder = NeRFMLP(cfg.decoder)

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, cfg: TripoSRConfig, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> "TripoSR":
        """Random weights, built directly on ``device`` in ``dtype`` (``meta`` allocates nothing)."""
        with building_on(device, dtype):
            model = cls(cfg)
            model.image_tokenizer.reset_buffers(device)
        return model.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls,
        repo_or_dir: str,
        revision: str | None = None,
        sha256: str | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> "TripoSR":
        """Load ``config.yaml`` + ``model.ckpt`` from a directory or HF repo, strictly.

        Args:
            repo_or_dir: local directory or HF repo id (``stabilityai/TripoSR``).
            revision: HF revision (ignored for directories).
            sha256: expected hex digest of ``model.ckpt``.
            dtype: parameter dtype after loading.
            device: target device.

        Raises:
            WeightsUnavailableError: the files are absent and the Hub is unreachable.
            CheckpointError: unsafe pickle, digest mismatch, or missing/extra/mis-shaped keys.
        """
        files = resolve_files(repo_or_dir, revision)
        cfg = TripoSRConfig.from_yaml(files.config)
        state_dict = to_legacy_vit_names(read_state_dict(files.weights, sha256))
        with torch.device("meta"):
            model = cls(cfg)
        load_strict(model, state_dict)
        model.image_tokenizer.reset_buffers("cpu")  # meta buffers cannot be moved
        model = model.to(device=device, dtype=dtype)
        model.image_tokenizer.reset_buffers(device)  # keep the normalisation in float32
        logger.info("loaded TripoSR from %s (%d tensors)", repo_or_dir, len(state_dict))
        return model.eval().requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the transformer (and, unless changed separately, the decoder)."""
        return self.backbone.proj_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.proj_in.weight.device

    # --- scene codes --------------------------------------------------------------------------

    def prepare_images(self, images: ImageInput) -> torch.Tensor:
        """Images -> (B, S, S, 3) float32 in [0, 1] on the model's device, S = cond_image_size.

        Args:
            images: (B, H, W, 3) float tensor in [0, 1], or a sequence of RGB PIL images or
                (H, W, 3) uint8 arrays. Other sizes are resized (bilinear, antialiased).
        """
        if isinstance(images, torch.Tensor):
            batch = images
            if not batch.is_floating_point():
                raise ValueError(f"images: expected a float tensor in [0, 1], got dtype {batch.dtype}")
        else:
            if len(images) == 0:
                raise ValueError("images: expected at least one image, got an empty sequence")
            batch = torch.stack([torch.from_numpy(_as_uint8_rgb(image, index).copy()) for index, image in enumerate(images)])
            batch = batch.float() / 255.0
        if batch.dim() != 4 or batch.shape[-1] != 3:
            raise ValueError(f"images: expected shape (B, H, W, 3), got {tuple(batch.shape)}")
        batch = batch.to(self.device, torch.float32)
        low, high = torch.aminmax(batch)
        if low < 0 or high > 1:
            raise ValueError(f"images: expected values in [0, 1], got [{float(low):.3g}, {float(high):.3g}]")
        size = self.cfg.cond_image_size
        if batch.shape[1:3] != (size, size):
            nchw = F.interpolate(batch.permute(0, 3, 1, 2), (size, size), mode="bilinear", antialias=True)
            batch = nchw.permute(0, 2, 3, 1).clamp(0, 1)
        return batch

    def forward(self, images: ImageInput) -> torch.Tensor:
        """Images -> scene codes (B, 3, C, 2P, 2P); (B, 3, 40, 64, 64) for the official model."""
        pixels = self.prepare_images(images)
        context = self.image_tokenizer(pixels)  # (B, 1 + HW/p^2, D)
        tokens = self.tokenizer(pixels.shape[0]).to(context.dtype)  # (B, C, 3 P P)
        planes = self.tokenizer.detokenize(self.backbone(tokens, context))  # (B, 3, C, P, P)
        return self.post_processor(planes)

    # --- products -----------------------------------------------------------------------------

    def query(self, scene_code: torch.Tensor, points: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> dict[str, torch.Tensor]:
        """Field at world points.

        Args:
            scene_code: (3, C, H, W) or (1, 3, C, H, W).
            points: (N, 3) world coordinates (the box is ±radius).
            chunk: points per decoder batch.

        Returns:
            ``density_act`` (N,) and ``color`` (N, 3) in [0, 1], float32 on the model's device.
        """
        if points.dim() != 2 or points.shape[1] != 3:
            raise ValueError(f"points: expected shape (N, 3), got {tuple(points.shape)}")
        return field.query_points(self.decoder, scene_code, points, self.cfg.renderer, chunk)

    def density_grid(self, scene_code: torch.Tensor, resolution: int = 256, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
        """``density_act`` on the marching grid: (R, R, R) float32 indexed [x, y, z]."""
        return field.density_grid(self.decoder, scene_code, resolution, self.cfg.renderer, chunk)

    def extract_mesh(
        self, scene_code: torch.Tensor, resolution: int = 256, threshold: float = 25.0, chunk: int = DEFAULT_CHUNK
    ) -> MeshAsset:
        """Surface ``density_act == threshold`` with vertex colours, in the model frame (z up, ±radius).

        Args:
            scene_code: (3, C, H, W) or (1, 3, C, H, W).
            resolution: grid points per axis (R).
            threshold: density level of the surface.
            chunk: points per decoder batch.

        Raises:
            StageOutputError: NaN densities, an empty surface, or non-finite vertices or colours.
        """
        if resolution < 2:
            raise ValueError(f"resolution: expected >= 2, got {resolution}")
        density = self.density_grid(scene_code, resolution, chunk)
        if torch.isnan(density).any():
            raise StageOutputError("TripoSR density grid contains NaN")
        surface = marching_cubes(density, threshold)
        if surface.faces.shape[0] == 0:
            raise StageOutputError(
                f"empty mesh: no density crosses {threshold} (range {float(density.min()):.3g}..{float(density.max()):.3g})"
            )
        radius = self.cfg.renderer.radius
        vertices = surface.vertices * (2.0 * radius / (resolution - 1)) - radius
        colors = self.query(scene_code, vertices, chunk)["color"]
        if not (torch.isfinite(vertices).all() and torch.isfinite(colors).all()):
            raise StageOutputError("TripoSR mesh has non-finite vertices or colours")
        return MeshAsset(
            vertices=vertices.cpu().numpy().astype(np.float32),
            faces=surface.faces.cpu().numpy().astype(np.int64),
            vertex_colors=(colors * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy(),
        )


def _as_uint8_rgb(image: object, index: int) -> np.ndarray:
    """A PIL image or uint8 array -> (H, W, 3) uint8 array."""
    if hasattr(image, "mode") and hasattr(image, "size"):
        if image.mode != "RGB":
            raise ValueError(f"images[{index}]: expected an RGB PIL image (composited), got mode {image.mode}")
        image = np.asarray(image)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        raise ValueError(f"images[{index}]: expected an (H, W, 3) uint8 array or RGB PIL image, got {got}")
    return np.ascontiguousarray(image)


def mesh_to_trimesh(mesh: MeshAsset) -> "trimesh.Trimesh":  # noqa: F821
    """A ``trimesh.Trimesh`` view of the mesh (no processing, so vertex order is kept)."""
    import trimesh

    return trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=mesh.vertex_colors, process=False)
