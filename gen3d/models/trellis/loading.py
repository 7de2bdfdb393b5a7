"""Finding and reading TRELLIS-image-large's release files, strictly and without pickle.

The release (``microsoft/TRELLIS-image-large``) holds ``pipeline.json`` and, per network,
``ckpts/<name>.json`` (class and arguments) and ``ckpts/<name>.safetensors``. The conditioner is
DINOv2 ViT-L/14 with registers, which the reference loads through ``torch.hub``; we read the same
weights from their Hugging Face copy (``facebook/dinov2-with-registers-large``, safetensors) and map
its names to the hub's (``dinov2.hf_to_hub``).
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gen3d.models.trellis.config import RELEASE_MODELS, TrellisConfig
from gen3d.models.trellis.dinov2 import HF_REPO, hf_to_hub
from gen3d.parts.checkpoints import read_safetensors, resolve_repo_files

logger = logging.getLogger(__name__)

TRELLIS_REPO = "microsoft/TRELLIS-image-large"
PIPELINE_NAME = "pipeline.json"
CONDITIONER_WEIGHTS = "model.safetensors"
CONDITIONER_CONFIG = "config.json"


@dataclass(frozen=True)
class Release:
    """TRELLIS's files, read: its config and each network's state dict (CPU, as stored).

    Attributes:
        config: the whole model's config.
        state_dicts: ``pipeline.json`` model key (and ``conditioner``) -> tensors in our key layout.
    """

    config: TrellisConfig
    state_dicts: dict[str, dict[str, torch.Tensor]]


def _fetch_hint(repo: str, conditioner_repo: str) -> str:
    return (
        f"TRELLIS weights are not available locally and the Hugging Face Hub could not be reached. Fetch "
        f"them with `hf download {repo}` and `hf download {conditioner_repo} {CONDITIONER_CONFIG} {CONDITIONER_WEIGHTS}`, or "
        f"pass local directories holding the same files. Without weights, use the tiny or random presets."
    )


def _read_json(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return json.load(handle)


def read_release(
    repo: str = TRELLIS_REPO,
    revision: str | None = None,
    conditioner_repo: str = HF_REPO,
    conditioner_revision: str | None = None,
    sha256: dict[str, str] | None = None,
) -> Release:
    """Resolve (cache first, then the Hub) and read every file the served model needs.

    Args:
        repo: TRELLIS repo id or a local directory with ``pipeline.json`` and ``ckpts/``.
        revision: commit to pin (recommended), or None for the default branch.
        conditioner_repo: DINOv2's repo id or local directory with ``model.safetensors``.
        conditioner_revision: its pinned commit, or None.
        sha256: optional digests, keyed by ``pipeline.json`` model key or ``conditioner``.

    Raises:
        WeightsUnavailableError: a file is missing and cannot be downloaded.
        CheckpointError: a digest mismatch or an unreadable file.
        ValueError: a ``pipeline.json`` or ckpt JSON that is not TRELLIS-image-large's.
    """
    hint = _fetch_hint(repo, conditioner_repo)
    digests = sha256 or {}
    (pipeline_path,) = resolve_repo_files(repo, [PIPELINE_NAME], revision, hint)
    pipeline = _read_json(pipeline_path)
    stems = {key: pipeline["args"]["models"][key] for key in RELEASE_MODELS}
    names = [f"{stem}{suffix}" for stem in stems.values() for suffix in (".json", ".safetensors")]
    paths = dict(zip(names, resolve_repo_files(repo, names, revision, hint)))
    checkpoints = {key: _read_json(paths[f"{stem}.json"]) for key, stem in stems.items()}
    state_dicts = {
        key: read_safetensors(paths[f"{stem}.safetensors"], digests.get(key)) for key, stem in stems.items()
    }
    conditioner_files = [CONDITIONER_CONFIG, CONDITIONER_WEIGHTS]
    config_path, weights_path = resolve_repo_files(conditioner_repo, conditioner_files, conditioner_revision, hint)
    state_dicts["conditioner"] = hf_to_hub(read_safetensors(weights_path, digests.get("conditioner")))
    logger.info("read TRELLIS from %s@%s and DINOv2 from %s", repo, revision or "default", conditioner_repo)
    return Release(TrellisConfig.from_release(pipeline, checkpoints, _read_json(config_path)), state_dicts)
