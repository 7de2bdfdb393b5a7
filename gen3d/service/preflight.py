"""Pre-flight: can this machine run a serve config? Checked before Ray starts.

``gen3d serve`` and ``scripts/serve.sh`` call ``check_serve_config`` so that a config this machine
cannot run stops at once with one message, instead of Serve keeping GPU replicas pending forever
or a replica failing minutes into a download. The decision comes from the devices and modes the
config's preset asks for, never from the config's file name. ``deployments.graph.build_app`` calls
``check_devices`` with the Ray cluster's GPU count, for ``serve run`` started by hand.
"""

import json
import logging
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from gen3d.config import Preset, load_preset

logger = logging.getLogger(__name__)

#: The serve config that runs on any CPU (tiny random-weight models), named by every device failure.
DEMO_CONFIG = "configs/serve_tiny.yaml"
DEMO_COMMAND = f"gen3d serve {DEMO_CONFIG} (or: serve run {DEMO_CONFIG})"
DEMO_HINT = f"For a CPU demo with tiny random-weight models (not real assets) run: {DEMO_COMMAND}"
#: The builder every gen3d serve config imports (installed with the package).
BUILDER = "deployments.graph:build_app"
#: Import paths of the gen3d application: the builder, or a checkout's top-level ``graph.py`` entry.
BUILDERS = (BUILDER, "graph:build_app")
#: ``GraphArgs.preset``'s default in deployments/graph.py, for a serve config whose args name no preset.
DEFAULT_PRESET = "fast"
#: Approximate download sizes of the default weights, in GB (the Hub's file sizes).
DOWNLOAD_GB = {
    "black-forest-labs/FLUX.1-schnell": 33.7,
    "stabilityai/TripoSR": 1.7,
    "u2net": 0.18,
    "isnet-general-use": 0.18,
}
#: Hub repos that serve files only to logged-in users who accepted their terms.
GATED = {"black-forest-labs/FLUX.1-schnell"}
#: Seconds a reachability probe of a download host may take.
PROBE_TIMEOUT_S = 5.0


class PreflightError(RuntimeError):
    """This machine cannot run the config; the message says why and what to run instead."""


@dataclass(frozen=True)
class Download:
    """Weights a stage needs that are not on this machine.

    Attributes:
        stage: the stage that needs them.
        what: the repo or model, and the files that are missing.
        command: the command that fetches them into the cache the stage reads.
        host: base URL of the server they come from (probed for reachability).
        gigabytes: approximate size, or None when unknown (a non-default repo).
    """

    stage: str
    what: str
    command: str
    host: str
    gigabytes: float | None


# --- the serve config -----------------------------------------------------------------------------


def builder_args(config_path: Path) -> dict[str, Any]:
    """The ``args`` of the config's gen3d application.

    Raises:
        PreflightError: as ``gen3d_application``.
    """
    return dict(gen3d_application(config_path).get("args") or {})


def gen3d_application(config_path: Path) -> dict[str, Any]:
    """The config's gen3d application (import path in ``BUILDERS``), as written.

    Raises:
        PreflightError: the file is missing, is a model preset, or has no gen3d application.
    """
    if not config_path.is_file():
        raise PreflightError(f"{config_path}: no such serve config (try serve_config.yaml or {DEMO_CONFIG})")
    raw = yaml.safe_load(config_path.read_text()) or {}
    if not isinstance(raw, dict) or "applications" not in raw:
        raise PreflightError(
            f"{config_path} is not a serve config (it has no 'applications'); model presets such as "
            f"configs/tiny.yaml are named by a serve config's args.preset. Serve configs: serve_config.yaml, {DEMO_CONFIG}"
        )
    for app in raw["applications"] or []:
        if app.get("import_path") in BUILDERS:
            return app
    raise PreflightError(f"{config_path}: no application with import_path {BUILDER}")


def preset_of(config_path: Path) -> tuple[str, Preset]:
    """The preset name that ``config_path``'s builder args give, and the preset with its overrides.

    Raises:
        PreflightError: as ``builder_args``, or the preset is missing or invalid.
    """
    args = builder_args(config_path)
    name = str(args.get("preset", DEFAULT_PRESET))
    try:
        return name, load_preset(name, args.get("overrides") or {})
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        raise PreflightError(f"{config_path}: {err}") from None


# --- devices ----------------------------------------------------------------------------------------


def cuda_stages(preset: Preset) -> dict[str, int]:
    """Stages whose device is CUDA, each with how many CUDA devices it needs (index + 1)."""
    needed = {}
    for name, cfg in preset:
        kind, _, index = cfg.device.partition(":")
        if kind == "cuda":
            needed[name] = int(index or 0) + 1
    return needed


def local_cuda_devices() -> tuple[int, str]:
    """CUDA devices torch can use here, and a sentence saying what was found.

    ``nvidia-smi`` is asked too, so that a GPU machine with a CPU-only torch gets the right
    advice (install a CUDA build of torch) rather than "no GPU".
    """
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    found = f"this machine has {count} usable CUDA device(s) (torch {torch.__version__}, {build}"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return count, f"{found}; no nvidia-smi)"
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        return count, f"{found}; nvidia-smi failed: {err})"
    gpus = sum(line.startswith("GPU ") for line in listed.splitlines())
    if gpus > count:
        return count, f"{found}; nvidia-smi lists {gpus} GPU(s): install a CUDA build of torch)"
    return count, f"{found})"


def check_devices(preset: Preset, cuda_devices: int, found: str, what: str) -> None:
    """Raise unless ``cuda_devices`` covers every stage that runs on CUDA.

    Args:
        preset: the validated preset.
        cuda_devices: CUDA devices available (this machine's, or the Ray cluster's GPUs).
        found: what was found, for the message (``local_cuda_devices``' sentence).
        what: the config's name in the message, e.g. ``serve_config.yaml (preset fast)``.

    Raises:
        PreflightError: one line naming the stages, what was found and the CPU demo config.
    """
    needed = cuda_stages(preset)
    if not needed or cuda_devices >= max(needed.values()):
        return
    stages = ", ".join(f"{name} (device {getattr(preset, name).device})" for name in needed)
    raise PreflightError(f"{what} runs {stages} on CUDA, but {found}. {DEMO_HINT}")


# --- weights ---------------------------------------------------------------------------------------


def _hub_file(repo: str, filename: str, revision: str | None) -> Path | None:
    """A file's path in the Hugging Face cache, or None when it is not cached."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo, filename, revision=revision)
    return Path(path) if isinstance(path, str) else None


def _missing_component_files(snapshot: Path, model_index: dict[str, Any]) -> list[str]:
    """Files a cached diffusers snapshot lacks, per ``model_index.json``'s components."""
    missing = []
    for component, spec in model_index.items():
        if component.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        folder = snapshot / component
        if not folder.is_dir():
            missing.append(f"{component}/")
            continue
        for index in folder.glob("*.index.json"):
            shards = set(json.loads(index.read_text())["weight_map"].values())
            missing += [f"{component}/{shard}" for shard in sorted(shards) if not (folder / shard).is_file()]
        # Schedulers and tokenizers are configs and vocabularies; every other component has weights.
        has_weights = any(folder.glob("*.safetensors"))
        if not has_weights and not any(word in spec[1] for word in ("Scheduler", "Tokenizer")):
            missing.append(f"{component}/*.safetensors")
    return missing


def revision_flag(revision: str | None) -> str:
    """`` --revision REV`` for an ``hf download`` command when the preset pins one."""
    return f" --revision {revision}" if revision else ""


def missing_flux(repo: str, revision: str | None) -> Download | None:
    """FLUX.1-schnell's diffusers files, unless a local folder or the HF cache holds them all."""
    if Path(repo).expanduser().is_dir():
        return None
    command = f'hf download {repo}{revision_flag(revision)} --include "model_index.json" --include "*/*"'
    if repo in GATED:
        command = f"hf auth login (after accepting the terms on its Hub page), then {command}"
    download = Download("text_to_image", repo, command, _hub_endpoint(), DOWNLOAD_GB.get(repo))
    index_path = _hub_file(repo, "model_index.json", revision)
    if index_path is None:
        return download
    missing = _missing_component_files(index_path.parent, json.loads(index_path.read_text()))
    return replace(download, what=f"{repo} ({', '.join(missing)})") if missing else None


def missing_triposr(repo: str, revision: str | None) -> Download | None:
    """TripoSR's ``config.yaml`` and ``model.ckpt``, unless a local folder or the HF cache holds them."""
    from gen3d.models.triposr.loading import CONFIG_NAME, WEIGHTS_NAME

    local = Path(repo).expanduser()
    if local.is_dir():
        missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (local / name).is_file()]
        if missing:
            raise PreflightError(f"image_to_3d: the folder {local} lacks {missing}")
        return None
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if _hub_file(repo, name, revision) is None]
    if not missing:
        return None
    command = f"hf download {repo}{revision_flag(revision)} {' '.join(missing)}"
    return Download("image_to_3d", f"{repo} ({', '.join(missing)})", command, _hub_endpoint(), DOWNLOAD_GB.get(repo))


def missing_rembg(session: str, model_path: str | None) -> Download | None:
    """rembg's ONNX file for ``session`` in its model directory (``REMBG_HOME``)."""
    from rembg.sessions import sessions as rembg_sessions

    if session == "u2net_custom":
        if model_path is None or not Path(model_path).expanduser().is_file():
            raise PreflightError(f"background: session u2net_custom needs an existing model_path, got {model_path!r}")
        return None
    if session not in rembg_sessions:
        raise PreflightError(f"background: unknown rembg session {session!r}; expected one of {sorted(rembg_sessions)}")
    cls = rembg_sessions[session]
    if cls.resolve_existing(f"{cls.name()}.onnx") is not None:
        return None
    # `rembg d` needs rembg's CLI extras; creating the session downloads through the same code.
    command = f"python -c \"import rembg; rembg.new_session('{session}')\""
    what = f"rembg model {session} (into {cls.model_dir()})"
    return Download("background", what, command, "https://github.com", DOWNLOAD_GB.get(session))


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def missing_weights(preset: Preset) -> list[Download]:
    """What the ``real``-mode stages of ``preset`` would download at start-up."""
    found = []
    if preset.text_to_image.mode == "real":
        found.append(missing_flux(preset.text_to_image.repo, preset.text_to_image.revision))
    if preset.image_to_3d.mode == "real":
        found.append(missing_triposr(preset.image_to_3d.repo, preset.image_to_3d.revision))
    if preset.background.mode == "real":
        found.append(missing_rembg(preset.background.session, preset.background.model_path))
    return [download for download in found if download is not None]


def reachable(url: str) -> bool:
    """Whether ``url``'s server answers within ``PROBE_TIMEOUT_S`` (any HTTP status counts).

    With ``HF_HUB_OFFLINE`` set the Hub counts as unreachable, as huggingface_hub treats it.
    """
    import httpx
    from huggingface_hub import constants

    if url == constants.ENDPOINT and constants.is_offline_mode():
        return False
    try:
        httpx.head(url, timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError:
        return False
    return True


def check_weights(preset: Preset, online: Callable[[str], bool] = reachable) -> list[str]:
    """Raise when weights are missing and cannot be downloaded; else say what will be downloaded.

    Args:
        preset: the validated preset.
        online: tells whether a download host can be reached (injected by tests).

    Returns:
        One line per download that the first start will make (empty when all is cached).

    Raises:
        PreflightError: listing each missing item with the command that fetches it.
    """
    downloads = missing_weights(preset)
    hosts = {d.host: online(d.host) for d in downloads}
    unreachable = [d for d in downloads if not hosts[d.host]]
    if unreachable:
        lines = [f"  {d.stage}: {d.what} -- fetch with: {d.command}" for d in unreachable]
        raise PreflightError(
            "weights are missing and their servers cannot be reached (offline, or HF_HUB_OFFLINE is set):\n"
            + "\n".join(lines)
            + "\nRun those commands on a machine with network access and copy the caches over "
            f"(~/.cache/huggingface, ~/.rembg), or start the CPU demo: {DEMO_COMMAND}"
        )
    return [
        f"{d.stage}: will download {d.what}"
        + (f" (~{d.gigabytes:g} GB)" if d.gigabytes is not None else "")
        + " on first start"
        for d in downloads
    ]


def check_serve_config(config_path: Path, online: Callable[[str], bool] = reachable) -> list[str]:
    """Everything ``gen3d serve`` checks before Ray starts: the config, its devices, its weights.

    Args:
        config_path: a Ray Serve config file (relative or absolute).
        online: as in ``check_weights``.

    Returns:
        Lines to show the user (downloads the first start will make).

    Raises:
        PreflightError: the one reason this machine cannot run the config.
    """
    preset_name, preset = preset_of(config_path)
    count, found = local_cuda_devices()
    check_devices(preset, count, found, f"{config_path} (preset {preset_name})")
    notes = check_weights(preset, online)
    if any(cfg.mode != "real" for _, cfg in preset):
        notes.append(f"preset {preset_name} uses random weights: outputs are demos, not real assets")
    logger.debug("preflight of %s passed (%s)", config_path, found)
    return notes
