"""requirements/*.lock (scripts/lock.sh) pin everything pyproject.toml asks for, each with hashes.

scripts/setup.sh and the Dockerfile install from these files with ``--require-hashes --no-deps``,
so a dependency added to pyproject.toml without running scripts/lock.sh must fail here, by name,
rather than as an import error somewhere else.
"""

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
RELOCK = "run scripts/lock.sh"


def pins(lock: Path) -> dict[str, tuple[Version, int]]:
    """Each pinned package of a lock: its version and how many hashes it lists."""
    found: dict[str, tuple[Version, int]] = {}
    current = None
    for line in lock.read_text().splitlines():
        if match := PIN.match(line):
            current = canonicalize_name(match.group(1))
            found[current] = (Version(match.group(2)), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = found[current]
            found[current] = (version, hashes + 1)
    return found


def requirements(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(text) for text in listed]


@pytest.mark.parametrize("name", ["runtime", "test", "torch-cpu", "torch-cuda"])
def test_every_pin_has_a_hash(name: str) -> None:
    locked = pins(LOCKS / f"{name}.lock")
    assert locked and not [package for package, (_, hashes) in locked.items() if hashes == 0]


@pytest.mark.parametrize(("lock", "extras"), [("runtime", [None]), ("test", [None, "test"])])
def test_each_dependency_is_pinned_within_its_range(lock: str, extras: list[str | None]) -> None:
    locked = pins(LOCKS / f"{lock}.lock")
    for extra in extras:
        for requirement in requirements(extra):
            name = canonicalize_name(requirement.name)
            if name == "torch":  # the torch locks hold it: its CUDA and CPU builds differ
                continue
            assert name in locked, f"{name} is not in requirements/{lock}.lock: {RELOCK}"
            assert requirement.specifier.contains(locked[name][0], prereleases=True), (
                f"requirements/{lock}.lock pins {name} {locked[name][0]}, outside {requirement.specifier}: {RELOCK}"
            )


def test_the_locks_agree_and_torch_is_one_version() -> None:
    runtime, test = pins(LOCKS / "runtime.lock"), pins(LOCKS / "test.lock")
    assert {name: runtime[name][0] for name in runtime} == {name: test[name][0] for name in runtime}
    cpu, cuda = pins(LOCKS / "torch-cpu.lock")["torch"][0], pins(LOCKS / "torch-cuda.lock")["torch"][0]
    assert cpu.local == "cpu" and cuda.local is None and cpu.public == cuda.public
    (torch,) = [r for r in requirements() if r.name == "torch"]
    assert torch.specifier.contains(cuda) and "torch" not in runtime
    for lock in ("torch-cpu", "torch-cuda"):
        shared = {name: version for name, (version, _) in pins(LOCKS / f"{lock}.lock").items() if name in runtime}
        assert shared == {name: runtime[name][0] for name in shared}, f"{lock}.lock disagrees with runtime.lock"
