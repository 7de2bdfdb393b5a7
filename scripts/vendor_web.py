"""Refresh ``web/vendor/``: the npm files the studio and ``/docs`` load, copied from pinned packages.

    python -m scripts.vendor_web               # npm ci (exact versions of package-lock.json), then copy
    python -m scripts.vendor_web --no-install  # copy from the node_modules/ already installed

The service serves ``web/vendor/`` and never reads ``node_modules/``, so a wheel, an image or a
checkout runs without Node.js; npm is needed only here, to refresh the copies after
package.json changes. Each package's licence files and its ``package.json`` (which records the
version) are copied beside its files; ``tests/web/test_vendored.py`` checks that every copied
byte equals the pinned package's file.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from deployments.web import VENDOR, VENDOR_FILES, WEB_DIR

ROOT = Path(__file__).resolve().parent.parent
NPM_INSTALL = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
#: Files each package ships that its licence asks redistributors to keep.
LICENCE_FILES = {
    "@google/model-viewer": ("LICENSE",),
    "three": ("LICENSE",),
    "@sparkjsdev/spark": ("LICENSE",),
    "swagger-ui-dist": ("LICENSE", "NOTICE", "swagger-ui-bundle.js.LICENSE.txt"),
}


def served_packages(root: Path = ROOT) -> list[str]:
    """The npm packages the service serves from: package.json's ``dependencies`` (not the test tools)."""
    return sorted(json.loads((root / "package.json").read_text())["dependencies"])


def pinned_versions(root: Path = ROOT) -> dict[str, str]:
    """Each served package's version as package-lock.json pins it."""
    locked = json.loads((root / "package-lock.json").read_text())["packages"]
    return {package: locked[f"node_modules/{package}"]["version"] for package in served_packages(root)}


def vendored_paths(root: Path = ROOT) -> list[str]:
    """Every file ``web/vendor/`` holds, as paths inside ``node_modules/``: served, licences, manifests."""
    extras = [f"{package}/{name}" for package, names in LICENCE_FILES.items() for name in names]
    return sorted({*VENDOR_FILES, *extras, *(f"{package}/package.json" for package in served_packages(root))})


def version_problems(node_modules: Path, pins: dict[str, str]) -> list[str]:
    """One line per served package that ``node_modules`` lacks or holds in another version."""
    problems = []
    for package, pinned in pins.items():
        manifest = node_modules / package / "package.json"
        if not manifest.is_file():
            problems.append(f"{package} {pinned} is not installed")
            continue
        installed = json.loads(manifest.read_text())["version"]
        if installed != pinned:
            problems.append(f"{package} is {installed}, package-lock.json pins {pinned}")
    return problems


def copy_vendored(node_modules: Path, vendor_dir: Path, paths: list[str]) -> None:
    """Replace ``vendor_dir`` by copies of ``paths`` from ``node_modules``, keeping their layout."""
    if vendor_dir.exists():
        shutil.rmtree(vendor_dir)
    for path in paths:
        target = vendor_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(node_modules / path, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-install", action="store_true", help="skip npm ci; copy from node_modules/ as it is")
    args = parser.parse_args(argv)
    if not args.no_install:
        subprocess.run(NPM_INSTALL, cwd=ROOT, check=True)
    node_modules = ROOT / "node_modules"
    problems = version_problems(node_modules, pinned_versions())
    if problems:
        print(f"vendor_web: node_modules does not match package-lock.json: {'; '.join(problems)}", file=sys.stderr)
        return 1
    paths = vendored_paths()
    copy_vendored(node_modules, WEB_DIR / VENDOR, paths)
    print(f"vendor_web: {len(paths)} files copied into {WEB_DIR / VENDOR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
