"""Finding, verifying and strictly loading TripoSR checkpoints (``config.yaml`` + ``model.ckpt``)."""

import hashlib
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gen3d.errors import WeightsUnavailableError
from gen3d.models.triposr.image_tokenizer import vit_keys_to_legacy

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.ckpt"
#: Prefix of the ViT inside the TripoSR state dict.
VIT_PREFIX = "image_tokenizer.model."


class CheckpointError(ValueError):
    """A checkpoint file is unsafe, corrupt, or does not match the model's layout."""


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
    local = Path(repo_or_dir).expanduser()
    if local.is_dir():
        missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (local / name).is_file()]
        if missing:
            raise WeightsUnavailableError(f"directory {str(local)!r} lacks {missing}. {_fetch_hint('stabilityai/TripoSR')}")
        return CheckpointFiles(local / CONFIG_NAME, local / WEIGHTS_NAME)

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    paths = []
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            path = hf_hub_download(repo_or_dir, name, revision=revision, local_files_only=True)
        except LocalEntryNotFoundError:
            logger.info("%s/%s not cached; downloading", repo_or_dir, name)
            try:
                path = hf_hub_download(repo_or_dir, name, revision=revision)
            except (HfHubHTTPError, OSError) as exc:
                raise WeightsUnavailableError(_fetch_hint(repo_or_dir)) from exc
        paths.append(Path(path))
    return CheckpointFiles(*paths)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a plain ``{name: tensor}`` state dict with ``torch.load(weights_only=True)``.

    Args:
        path: checkpoint file.
        sha256: expected hex digest; checked before unpickling anything.

    Raises:
        CheckpointError: digest mismatch, a pickle that is not a plain dict of tensors.
    """
    if sha256 is not None:
        actual = file_sha256(path)
        if actual.lower() != sha256.lower():
            raise CheckpointError(f"sha256 of {path}: expected {sha256}, got {actual}")
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


def check_layout(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Raise ``CheckpointError`` listing missing, unexpected and mis-shaped keys (if any)."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {expected[key]}"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != expected[key]
    )
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"checkpoint does not match the model layout: missing keys {missing}; "
            f"unexpected keys {unexpected}; mis-shaped keys {mismatched}"
        )


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Check the layout, then assign the tensors into ``model`` (which may live on the meta device)."""
    check_layout(model, state_dict)
    model.load_state_dict(state_dict, strict=True, assign=True)
