"""Finding, verifying and strictly loading TripoSR checkpoints (``config.yaml`` + ``model.ckpt``)."""

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from gen3d.models.triposr.image_tokenizer import vit_keys_to_legacy
from gen3d.parts.checkpoints import CheckpointError, check_sha256, resolve_repo_files

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.ckpt"
#: Prefix of the ViT inside the TripoSR state dict.
VIT_PREFIX = "image_tokenizer.model."


@dataclass(frozen=True)
class CheckpointFiles:
    """Local paths of one checkpoint.

    Attributes:
        config: the reference-schema ``config.yaml``.
        weights: the plain state dict ``model.ckpt``.
    """

    config: Path
    weights: Path


def _fetch_hint(repo: str) -> str:
    return (
        f"TripoSR weights for {repo!r} are not available locally and the Hugging Face Hub could not be "
        f"reached. Fetch them with `huggingface-cli download {repo} {CONFIG_NAME} {WEIGHTS_NAME}` "
        f"(the repo is gated: accept its terms and `huggingface-cli login` first), or pass a local "
        f"directory holding both files. For tests without weights use the tiny preset "
        f"(`TripoSR.from_config(TripoSRConfig.tiny())`, mode 'tiny')."
    )


def resolve_files(repo_or_dir: str, revision: str | None = None) -> CheckpointFiles:
    """Local directory, or HF repo through huggingface_hub's cache (cache first, then network).

    Raises:
        WeightsUnavailableError: a file is absent and cannot be downloaded.
    """
    hint = _fetch_hint(repo_or_dir if not Path(repo_or_dir).expanduser().is_dir() else "stabilityai/TripoSR")
    return CheckpointFiles(*resolve_repo_files(repo_or_dir, (CONFIG_NAME, WEIGHTS_NAME), revision, hint))


def read_state_dict(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a plain ``{name: tensor}`` state dict with ``torch.load(weights_only=True)``.

    Args:
        path: checkpoint file.
        sha256: expected hex digest; checked before unpickling anything.

    Raises:
        CheckpointError: digest mismatch, a pickle that is not a plain dict of tensors.
    """
    check_sha256(path, sha256)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError) as exc:
        raise CheckpointError(
            f"{path} is not a plain tensor state dict loadable with torch.load(weights_only=True): {exc}"
        ) from exc
    if not isinstance(loaded, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        kind = type(loaded).__name__
        sample = list(loaded)[:5] if isinstance(loaded, dict) else None
        raise CheckpointError(f"{path}: expected a plain dict of str -> Tensor, got {kind} (first keys: {sample})")
    return loaded


def to_legacy_vit_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept ViT keys written with transformers >= 5.9 names by mapping them to the official ones."""
    if any(key.startswith(VIT_PREFIX + "layers.") for key in state_dict):
        logger.info("state dict uses transformers>=5.9 ViT names; mapping to the official layout")
        return vit_keys_to_legacy(state_dict, prefix=VIT_PREFIX)
    return state_dict
