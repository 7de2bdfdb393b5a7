"""Finding and strictly loading checkpoint files, shared by every model we load.

A model's files come from a local directory or from a Hugging Face repo at a pinned revision
(cache first, then network). Loading is strict: the checkpoint's keys and shapes must be exactly
the model's, and a mismatch lists every missing, unexpected and mis-shaped key. Weights are read
with safetensors or ``torch.load(weights_only=True)``, never with unrestricted pickle.
"""

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from gen3d.errors import WeightsUnavailableError

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file is unsafe, corrupt, or does not match the model's layout."""


def resolve_repo_files(repo_or_dir: str, names: Sequence[str], revision: str | None, fetch_hint: str) -> list[Path]:
    """Local paths of ``names`` (paths inside the repo) from a directory or a Hugging Face repo.

    Args:
        repo_or_dir: a local directory holding the files, or an HF repo id.
        names: file paths relative to the repo root (``ckpts/x.safetensors``).
        revision: HF revision (branch, tag or commit); ignored for a directory.
        fetch_hint: the error's explanation of how to obtain the files.

    Raises:
        WeightsUnavailableError: a file is absent and cannot be downloaded.
    """
    local = Path(repo_or_dir).expanduser()
    if local.is_dir():
        missing = [name for name in names if not (local / name).is_file()]
        if missing:
            raise WeightsUnavailableError(f"directory {str(local)!r} lacks {missing}. {fetch_hint}")
        return [local / name for name in names]

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    paths = []
    for name in names:
        try:
            path = hf_hub_download(repo_or_dir, name, revision=revision, local_files_only=True)
        except LocalEntryNotFoundError:
            logger.info("%s/%s not cached; downloading", repo_or_dir, name)
            try:
                path = hf_hub_download(repo_or_dir, name, revision=revision)
            except (HfHubHTTPError, OSError) as exc:
                raise WeightsUnavailableError(fetch_hint) from exc
        paths.append(Path(path))
    return paths


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, sha256: str | None) -> None:
    """Raise ``CheckpointError`` when ``sha256`` is given and the file's digest differs."""
    if sha256 is None:
        return
    actual = file_sha256(path)
    if actual.lower() != sha256.lower():
        raise CheckpointError(f"sha256 of {path}: expected {sha256}, got {actual}")


def read_safetensors(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors on the CPU, after the optional digest check."""
    check_sha256(path, sha256)
    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc


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
