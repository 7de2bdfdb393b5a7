"""web/vendor/ holds exactly the pinned npm packages' files (scripts/vendor_web.py copies them).

node_modules/ comes from ``npm ci`` of package-lock.json (scripts/setup.sh --tests runs it), so
a vendored file edited by hand, a stale copy after a version bump, or a file the studio loads
but nobody copied fails here.
"""

import json
from pathlib import Path

import pytest

from deployments.web import VENDOR, WEB_DIR
from scripts.vendor_web import pinned_versions, vendored_paths, version_problems
from tests.conftest import ROOT

NODE_MODULES = ROOT / "node_modules"
VENDORED = WEB_DIR / VENDOR
REFRESH = "web/vendor/ differs from the pinned package: run `python -m scripts.vendor_web`"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    problems = version_problems(NODE_MODULES, pinned_versions())
    assert not problems, f"run `npm ci --ignore-scripts` first: {problems}"
    return NODE_MODULES


def test_the_vendored_folder_holds_exactly_the_listed_files() -> None:
    present = sorted(str(path.relative_to(VENDORED)) for path in VENDORED.rglob("*") if path.is_file())
    assert present == vendored_paths()


@pytest.mark.parametrize("path", vendored_paths())
def test_each_vendored_file_is_the_pinned_packages_byte_for_byte(node_modules: Path, path: str) -> None:
    assert (VENDORED / path).read_bytes() == (node_modules / path).read_bytes(), REFRESH


def test_the_licence_list_names_each_package_at_its_pinned_version() -> None:
    licences = (WEB_DIR / "LICENSES.md").read_text()
    for package, version in pinned_versions().items():
        assert json.loads((VENDORED / package / "package.json").read_text())["version"] == version
        assert f"| `{package}` | {version} |" in licences, package

