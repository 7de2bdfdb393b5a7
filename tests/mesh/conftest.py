"""Shared planted meshes: marching cubes of analytic fields on TripoSR's grid, built once per session."""

import pytest

from gen3d.mesh.clean import clean
from gen3d.mesh.decimate import decimate
from gen3d.mesh.planted import bumpy_blob, mug_field, planted_mesh
from gen3d.results import MeshAsset


@pytest.fixture(scope="session")
def blob() -> MeshAsset:
    """The bumpy blob at resolution 256: about 200k faces, like a real ``extract_mesh``."""
    return bumpy_blob(256)


@pytest.fixture(scope="session")
def blob_20k(blob: MeshAsset) -> MeshAsset:
    """The blob cleaned and decimated to 20k faces."""
    return clean(decimate(clean(blob), 20_000))


@pytest.fixture(scope="session")
def mug_10k() -> MeshAsset:
    """A mug (hollow, with a handle: concave, genus 3) at resolution 128, decimated to 10k faces."""
    return clean(decimate(clean(planted_mesh(mug_field, 128)), 10_000))
