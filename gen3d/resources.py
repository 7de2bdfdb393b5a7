"""Where gen3d's data files live: the presets and serve configs, and the studio's web files.

A source checkout keeps them at its top (``configs/``, ``web/``, ``serve_config.yaml``); an
installed wheel carries the same tree inside the package, as ``gen3d/_data/`` (setup.py copies it
there). Every lookup goes through ``data_root``, so code never guesses paths from its own
location.
"""

from pathlib import Path

#: The wheel's copy of the data tree; absent in a source checkout (and in an editable install).
PACKAGED = Path(__file__).resolve().parent / "_data"
#: A source checkout: the folder that holds this package.
CHECKOUT = Path(__file__).resolve().parent.parent
#: The serve config a bare ``gen3d serve`` runs.
DEFAULT_SERVE_CONFIG = "serve_config.yaml"


def data_root() -> Path:
    """The folder holding ``configs/`` and ``web/``: the installed package's data, else the checkout."""
    return PACKAGED if PACKAGED.is_dir() else CHECKOUT


def data_path(*parts: str) -> Path:
    """A path under ``data_root()``, e.g. ``data_path("configs", "tiny.yaml")`` (it may not exist)."""
    return data_root().joinpath(*parts)


def serve_config_path(name: str) -> Path:
    """Resolve a serve config argument: a file that exists as given, else one that gen3d ships.

    ``configs/serve_tiny.yaml``, ``serve_tiny.yaml`` and ``serve_tiny`` all name the shipped
    tiny config when the current directory has no such file, so an installed ``gen3d serve``
    works from any directory.

    Returns:
        The file, or ``Path(name)`` unchanged when nothing matches (the caller reports it).
    """
    given = Path(name).expanduser()
    if given.is_file():
        return given.resolve()
    stem = given.name if given.suffix in {".yaml", ".yml"} else f"{given.name}.yaml"
    for candidate in (data_path(name), data_path(stem), data_path("configs", stem)):
        if candidate.is_file():
            return candidate
    return given


def shipped_serve_configs() -> list[str]:
    """The names of the serve configs gen3d ships (for error messages)."""
    configs = data_path("configs")
    names = {path.name for path in configs.glob("serve*.yaml")} if configs.is_dir() else set()
    return sorted(names | ({DEFAULT_SERVE_CONFIG} if data_path(DEFAULT_SERVE_CONFIG).is_file() else set()))
