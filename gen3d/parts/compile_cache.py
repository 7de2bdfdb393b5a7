"""Where a process's ``torch.compile`` results live, and how a fresh machine gets them ahead of time.

Inductor and Triton keep compiled graphs and kernels on disk, by default under ``/tmp``, which a
reboot or a fresh container loses. :func:`open_compile_cache` points both at
``<root>/<key>/``, where the key names every version the artifacts depend on (torch, Triton,
torchao, diffusers, transformers, Python, CUDA, GPU model and driver), so a restart on the same
machine finds its caches and an upgrade starts a new folder instead of reading stale entries.

``gen3d.service.precompile`` compiles once per key and writes ``artifacts.bin`` there
(``torch.compiler.save_cache_artifacts``: the AOTAutograd and FX-graph cache entries with their
Triton kernels and tuned configs). A replica whose key folder holds that file loads it before
compiling, so its compiles become cache hits even on a machine that never compiled; when only
other keys were precompiled, it logs which versions differ and compiles.

Call :func:`open_compile_cache` before the process's first compile: the compile workers and
Triton read these locations when they start.
"""

import importlib.metadata
import json
import logging
import os
import platform
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

ARTIFACTS_NAME = "artifacts.bin"
KEY_NAME = "key.json"
#: The Linux NVIDIA kernel module's version line, e.g. "... Kernel Module  580.82.07  Sun ...".
_DRIVER_FILE = Path("/proc/driver/nvidia/version")
_DRIVER_VERSION = re.compile(r"Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]*)")


def package_version(name: str) -> str:
    """Installed version of distribution ``name``, or ``none``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def driver_version(version_file: Path = _DRIVER_FILE) -> str:
    """The NVIDIA kernel driver's version (``580.82.07``), or ``none`` without one."""
    try:
        match = _DRIVER_VERSION.search(version_file.read_text())
    except OSError:
        return "none"
    return match.group(1) if match else "unknown"


@dataclass(frozen=True)
class CompileKey:
    """Everything compiled artifacts depend on besides the model code and its settings.

    Attributes:
        torch: torch version (``2.11.0+cu130``).
        triton: Triton version, ``none`` on CPU-only installs.
        torchao: torchao version (its fp8 tensor traces into the graphs).
        diffusers: diffusers version (the FLUX modules' code).
        transformers: transformers version (the text encoders' code).
        python: interpreter version; Dynamo traces its bytecode.
        cuda: CUDA version torch was built for, ``none`` for CPU builds.
        device: GPU model (``NVIDIA H200``) or ``cpu``.
        capability: compute capability (``9.0``), empty on CPU.
        driver: NVIDIA driver version, ``none`` on CPU.
    """

    torch: str
    triton: str
    torchao: str
    diffusers: str
    transformers: str
    python: str
    cuda: str
    device: str
    capability: str
    driver: str

    @classmethod
    def current(cls, device: torch.device) -> "CompileKey":
        """The key of this process on ``device``."""
        if device.type == "cuda":
            major, minor = torch.cuda.get_device_capability(device)
            name, capability, driver = torch.cuda.get_device_name(device), f"{major}.{minor}", driver_version()
        else:
            name, capability, driver = device.type, "", "none"
        return cls(
            torch=torch.__version__,
            triton=package_version("triton"),
            torchao=package_version("torchao"),
            diffusers=package_version("diffusers"),
            transformers=package_version("transformers"),
            python=platform.python_version(),
            cuda=torch.version.cuda or "none",
            device=name,
            capability=capability,
            driver=driver,
        )

    @classmethod
    def from_file(cls, path: Path) -> "CompileKey":
        """Read a ``key.json`` written by :meth:`write`.

        Raises:
            ValueError: the file is not a key of this schema.
        """
        raw = json.loads(path.read_text())
        expected = {field.name for field in fields(cls)}
        if not isinstance(raw, dict) or set(raw) != expected:
            raise ValueError(f"{path}: expected a JSON object with keys {sorted(expected)}")
        return cls(**{name: str(value) for name, value in raw.items()})

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    def dir_name(self) -> str:
        """A folder name that spells the whole key (``torch2.11.0+cu130-triton3.6.0-...-NVIDIA-H200-sm9.0-driver580...``)."""
        parts = [
            f"torch{self.torch}",
            f"triton{self.triton}",
            f"torchao{self.torchao}",
            f"diffusers{self.diffusers}",
            f"transformers{self.transformers}",
            f"py{self.python}",
            f"cuda{self.cuda}",
            self.device,
            f"sm{self.capability}" if self.capability else "",
            f"driver{self.driver}",
        ]
        return re.sub(r"[^A-Za-z0-9.+_-]+", "-", "-".join(part for part in parts if part))

    def differences(self, other: "CompileKey") -> dict[str, tuple[str, str]]:
        """``{field: (this value, other value)}`` for every field that differs."""
        ours, theirs = asdict(self), asdict(other)
        return {name: (ours[name], theirs[name]) for name in ours if ours[name] != theirs[name]}


@dataclass(frozen=True)
class CompileCache:
    """One key's folder under a cache root.

    Attributes:
        directory: ``<root>/<key.dir_name()>``.
        key: the versions this folder is for.
    """

    directory: Path
    key: CompileKey

    @property
    def inductor_dir(self) -> Path:
        return self.directory / "inductor"

    @property
    def triton_dir(self) -> Path:
        return self.directory / "triton"

    @property
    def artifacts(self) -> Path:
        return self.directory / ARTIFACTS_NAME

    @classmethod
    def for_device(cls, root: str | Path, device: torch.device) -> "CompileCache":
        key = CompileKey.current(device)
        return cls(Path(root).expanduser().resolve() / key.dir_name(), key)


def use_cache_dirs(cache: CompileCache) -> None:
    """Point inductor (graphs, kernels, tuned configs) and Triton (binaries) at ``cache``'s folder."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    cache.inductor_dir.mkdir(parents=True, exist_ok=True)
    cache.triton_dir.mkdir(parents=True, exist_ok=True)
    # Importing inductor fills in its /tmp default; only another value was someone's choice.
    unset = (None, default_cache_dir())
    for variable, path in (("TORCHINDUCTOR_CACHE_DIR", cache.inductor_dir), ("TRITON_CACHE_DIR", cache.triton_dir)):
        previous = os.environ.get(variable)
        if previous not in (*unset, str(path)):
            logger.warning("compile cache: %s was %s; the config's compile_cache_dir replaces it", variable, previous)
        os.environ[variable] = str(path)
    cache.key.write(cache.directory / KEY_NAME)


def explain_missing_artifacts(cache: CompileCache) -> str:
    """Why ``cache`` has no precompiled artifacts: none anywhere under its root, or other keys only."""
    root = cache.directory.parent
    others = sorted(path.parent for path in root.glob(f"*/{ARTIFACTS_NAME}") if path.parent != cache.directory)
    if not others:
        return f"no precompiled artifacts under {root} (`python -m gen3d.service.precompile` writes them)"
    reasons = []
    for other in others:
        try:
            differences = cache.key.differences(CompileKey.from_file(other / KEY_NAME))
        except (OSError, ValueError) as err:
            reasons.append(f"{other.name}: unreadable key ({err})")
            continue
        changed = ", ".join(f"{name} {theirs} -> {ours}" for name, (ours, theirs) in differences.items())
        reasons.append(f"{other.name}: {changed}")
    return f"artifacts under {root} were precompiled for other versions ({'; '.join(reasons)})"


def open_compile_cache(root: str | Path, device: torch.device) -> CompileCache:
    """Use ``root``'s folder for this process's key and load its precompiled artifacts, if any.

    Args:
        root: the cache root (``compile_cache_dir``); ``~`` is expanded.
        device: the device the stage compiles for (its model and driver are part of the key).

    Returns:
        The key's folder, now the process's inductor and Triton cache.

    Raises:
        RuntimeError: the key's ``artifacts.bin`` exists but torch cannot load it.
    """
    cache = CompileCache.for_device(root, device)
    use_cache_dirs(cache)
    if not cache.artifacts.is_file():
        logger.info("compile cache %s: %s; compiling", cache.directory, explain_missing_artifacts(cache))
        return cache
    # torch logs why it cannot parse a file and returns None: a corrupt file, or one torch cannot read.
    info = torch.compiler.load_cache_artifacts(cache.artifacts.read_bytes())
    if info is None:
        raise RuntimeError(
            f"compile cache: cannot load {cache.artifacts} (see torch's warning above); delete it or run "
            "python -m gen3d.service.precompile --force"
        )
    counts = {kind: len(keys) for kind, keys in info.artifacts.items()}
    logger.info("compile cache %s: loaded precompiled artifacts %s", cache.directory, counts)
    return cache


def save_artifacts(cache: CompileCache) -> dict[str, int]:
    """Write every cache entry this process compiled or loaded to ``cache``'s ``artifacts.bin``.

    Returns:
        Entries written per kind (``inductor``, ``aot_autograd``, ``autotune``...).

    Raises:
        RuntimeError: nothing was compiled in this process, so there is nothing to save.
    """
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        raise RuntimeError("compile cache: this process compiled nothing, so there are no artifacts to save")
    data, info = saved
    partial = cache.artifacts.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(cache.artifacts)  # a replica never reads a half-written file
    counts = {kind: len(keys) for kind, keys in info.artifacts.items()}
    logger.info("compile cache: wrote %s (%.1f MB, %s)", cache.artifacts, len(data) / 1e6, counts)
    return counts
