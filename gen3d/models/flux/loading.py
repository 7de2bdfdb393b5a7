"""Loading FLUX.1-schnell's public weights: reachability first, then ``FluxPipeline.from_pretrained``.

fp8 is applied while diffusers loads (its torchao quantizer); on CUDA the weights stream straight
to the GPU. A missing or unreachable checkpoint fails at once with the command that fetches it.
"""

from pathlib import Path

import torch
from diffusers import FluxPipeline

from gen3d.config import TextToImageConfig
from gen3d.devices import TORCH_DTYPES
from gen3d.errors import WeightsUnavailableError
from gen3d.models.flux.components import pipeline_quantization_config

#: Storage dtype per precision; fp8 weights are quantized from bf16 and compute around bf16.
DTYPES = {**TORCH_DTYPES, "fp8": torch.bfloat16}


def fetch_hint(repo: str) -> str:
    """How to make ``repo``'s weights available, and the offline alternative."""
    return (
        f"fetch them with `hf download {repo}` (older huggingface_hub: `huggingface-cli download {repo}`). "
        "FLUX.1-schnell is Apache-2.0, but its Hugging Face repo is gated: accept its terms on the model page "
        "and log in (`hf auth login` or HF_TOKEN) first. Without weights, use the tiny preset (mode: tiny) "
        "or mode: random."
    )


def ensure_weights_reachable(repo: str, revision: str | None) -> None:
    """Return if ``repo`` is a local folder, is in the HF cache, or the Hub answers; else raise at once.

    Raises:
        WeightsUnavailableError: not cached and offline (HF_HUB_OFFLINE) or the Hub is unreachable.
    """
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if Path(repo).is_dir():  # a local copy of the repo: from_pretrained reads it directly
        return
    try:
        snapshot_download(repo, revision=revision, local_files_only=True, allow_patterns=["model_index.json"])
        return
    except LocalEntryNotFoundError:
        pass
    if constants.is_offline_mode():
        raise WeightsUnavailableError(
            f"text_to_image: weights of {repo} are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
            f"and HF_HUB_OFFLINE is set; {fetch_hint(repo)}"
        )
    try:
        HfApi().model_info(repo, revision=revision, timeout=10)
    # Any probe failure (DNS, TLS, HTTP 4xx/5xx from the Hub's client) means no download can start now.
    except Exception as err:  # noqa: BLE001
        raise WeightsUnavailableError(
            f"text_to_image: weights of {repo} are not cached and the Hub cannot be reached ({err}); {fetch_hint(repo)}"
        ) from err


def load_pretrained_pipeline(cfg: TextToImageConfig, device: torch.device) -> FluxPipeline:
    """``FluxPipeline.from_pretrained`` with fp8 applied at load time by diffusers' torchao quantizer.

    Downloads show huggingface_hub's progress bars. On CUDA the weights stream straight to the GPU.
    """
    ensure_weights_reachable(cfg.repo, cfg.revision)
    quantization = pipeline_quantization_config(
        transformer=cfg.precision == "fp8", text_encoder_2=cfg.text_encoder_precision == "fp8"
    )
    device_map = None
    if device.type == "cuda":
        # diffusers' pipeline device_map accepts only the bare "cuda", i.e. the current device.
        torch.cuda.set_device(device)
        device_map = "cuda"
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        pipe = FluxPipeline.from_pretrained(
            cfg.repo,
            revision=cfg.revision,
            torch_dtype=DTYPES[cfg.precision],
            quantization_config=quantization,
            device_map=device_map,
        )
    # GatedRepoError is a RepositoryNotFoundError: the usual case is terms not accepted or no token.
    except (RepositoryNotFoundError, LocalEntryNotFoundError) as err:
        raise WeightsUnavailableError(f"text_to_image: cannot download {cfg.repo} ({err}); {fetch_hint(cfg.repo)}") from err
    if device_map is None:
        pipe.to(device)
    # As the random builds are: no autograd state, and compiled graphs keyed like theirs.
    for model in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        model.requires_grad_(False)
    return pipe
