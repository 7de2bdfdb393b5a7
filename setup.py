"""The one packaging step pyproject.toml cannot state: the checkout's data tree ships inside gen3d.

A checkout keeps ``configs/``, ``web/`` (with the vendored npm files) and ``serve_config.yaml`` at
its top. A wheel carries the same tree as ``gen3d/_data/``, where ``gen3d.resources`` looks first,
so an installed gen3d runs from any directory. Editable installs read the checkout itself.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: Top-level entries of the checkout copied into ``gen3d/_data/`` (MANIFEST.in puts them in the sdist).
DATA = ("configs", "web", "serve_config.yaml")


class BuildWithData(build_py):
    """``build_py`` that also copies ``DATA`` into the built package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "gen3d" / "_data"
        target.mkdir(parents=True, exist_ok=True)
        for name in DATA:
            if Path(name).is_dir():
                shutil.copytree(name, target / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(name, target / name)


setup(cmdclass={"build_py": BuildWithData})
