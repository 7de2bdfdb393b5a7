"""Chunked decimation on a process pool: seams weld exactly, and the result is as good as one pass."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from gen3d.mesh.clean import clean
from gen3d.mesh.decimate import decimate
from gen3d.mesh.decimate_chunks import (
    ChunkedDecimator,
    DecimatedChunk,
    chunk_labels,
    seam_positions,
    split,
    weld,
)
from gen3d.mesh.metrics import chamfer_distance, edge_uses, extent, signed_volumes
from gen3d.mesh.planted import bumpy_blob, gradient
from gen3d.results import MeshAsset

TARGET = 5_000
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ramp_blob() -> MeshAsset:
    """The bumpy blob at grid 160 (about 80k faces) coloured by a linear ramp."""
    return clean(bumpy_blob(160, gradient))


@pytest.fixture(scope="module")
def decimator() -> ChunkedDecimator:
    chunked = ChunkedDecimator(workers=2, min_faces=0)
    yield chunked
    chunked.close()


def non_manifold_vertices(faces: np.ndarray, vertex_count: int) -> int:
    """Vertices whose faces do not form one closed fan (link edges != link vertices)."""
    centre = faces.reshape(-1)
    ahead, behind = np.roll(faces, -1, axis=1).reshape(-1), np.roll(faces, 1, axis=1).reshape(-1)
    links = np.unique(np.stack([np.concatenate([centre, centre]), np.concatenate([ahead, behind])], 1), axis=0)
    link_vertices = np.bincount(links[:, 0], minlength=vertex_count)
    link_edges = np.bincount(centre, minlength=vertex_count)
    return int((link_vertices != link_edges).sum())


def triangles_by_position(mesh: MeshAsset) -> set[tuple[float, ...]]:
    """Each face as its corners' coordinates, rotated to start at its smallest corner."""
    corners = mesh.vertices[mesh.faces].astype(np.float64)
    out = set()
    for tri in corners:
        start = min(range(3), key=lambda i: tuple(tri[i]))
        out.add(tuple(np.roll(tri, -start, axis=0).reshape(-1)))
    return out


def test_chunks_weld_back_into_the_same_mesh(ramp_blob: MeshAsset) -> None:
    labels = chunk_labels(ramp_blob.vertices, ramp_blob.faces)
    assert len(np.unique(labels)) == 8
    chunks, used = split(ramp_blob, labels, TARGET)
    assert sum(len(chunk.faces) for chunk in chunks) == len(ramp_blob.faces)
    assert all(chunk.seam.any() and not chunk.seam.all() for chunk in chunks)
    # Undecimated chunks: every vertex keeps its position, so each seam vertex finds itself.
    same = [DecimatedChunk(c.vertices, c.faces, c.colors, seam_positions(c, c.vertices)) for c in chunks]
    welded = weld(same, used)
    assert len(welded.vertices) == len(ramp_blob.vertices)
    assert triangles_by_position(welded) == triangles_by_position(ramp_blob)
    assert (edge_uses(welded.faces) == 2).all()


def test_chunked_decimation_is_closed_manifold_and_as_close_as_one_pass(
    ramp_blob: MeshAsset, decimator: ChunkedDecimator
) -> None:
    assert (edge_uses(ramp_blob.faces) == 2).all() and len(ramp_blob.faces) > 60_000
    chunked = decimator(ramp_blob, TARGET)
    assert decimator._pool is not None  # the pool ran it
    one_pass = decimate(ramp_blob, TARGET)
    assert TARGET - 50 <= len(chunked.faces) <= TARGET
    assert (edge_uses(chunked.faces) == 2).all()
    assert non_manifold_vertices(chunked.faces, len(chunked.vertices)) == 0
    assert signed_volumes(chunked.vertices, chunked.faces).sum() > 0
    source = (ramp_blob.vertices, ramp_blob.faces)
    ours = chamfer_distance(source, (chunked.vertices, chunked.faces))
    theirs = chamfer_distance(source, (one_pass.vertices, one_pass.faces))
    assert ours <= 1.2 * theirs and ours <= 0.005 * extent(ramp_blob.vertices)
    expected = gradient(torch.from_numpy(chunked.vertices)).numpy() * 255.0
    error = np.abs(chunked.vertex_colors.astype(np.float64) - expected)
    assert error.mean() < 1.5 and error.max() < 12.0


def test_small_meshes_take_one_pass_without_a_pool(ramp_blob: MeshAsset) -> None:
    lazy = ChunkedDecimator(workers=2, min_faces=len(ramp_blob.faces))
    reduced = lazy(ramp_blob, TARGET)
    assert lazy._pool is None
    np.testing.assert_array_equal(reduced.faces, decimate(ramp_blob, TARGET).faces)
    with pytest.raises(ValueError, match="workers: expected >= 2"):
        ChunkedDecimator(workers=1, min_faces=0)


#: A process that decimates in chunks, prints its pool's worker pids, then waits to be killed.
_KILLED_OWNER = """
import sys, time
from gen3d.mesh.decimate_chunks import ChunkedDecimator
from gen3d.mesh.planted import bumpy_blob
chunked = ChunkedDecimator(workers=2, min_faces=0)
chunked(bumpy_blob(96), 2_000)
print(*chunked._pool._processes, flush=True)
time.sleep(600)
"""


def test_pool_workers_end_when_their_owner_is_killed() -> None:
    owner = subprocess.Popen([sys.executable, "-c", _KILLED_OWNER], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        workers = [psutil.Process(int(pid)) for pid in owner.stdout.readline().split()]
        assert len(workers) == 2 and all(worker.is_running() for worker in workers)
        # The workers, the fork server and multiprocessing's resource tracker.
        descendants = psutil.Process(owner.pid).children(recursive=True)
        assert set(workers) <= set(descendants)
    finally:
        owner.kill()  # SIGKILL: no shutdown code runs in the owner
        owner.wait()
    _, alive = psutil.wait_procs(descendants, timeout=15)
    assert alive == [], f"orphaned pool processes still running: {alive}"
