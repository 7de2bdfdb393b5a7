"""Quadric decimation of a large mesh in spatial chunks on a process pool, then one pass over all.

Fast-Quadric-Mesh-Simplification runs on one core, and TRELLIS's FlexiCubes meshes are large: 364k
faces took 0.5-0.7 s to reach 20k on the GPU box's CPU, a third of a request. Here the faces are cut
into chunks at the quantiles of their first corners (2 x 2 x 2 by default), and each chunk is
decimated on its own core by pyfqmr (the same C++ core as ``fast-simplification``) with its open
border locked, so neighbouring chunks still share every seam vertex. The welded mesh, ``OVERSHOOT``
times the target, then takes one ordinary ``decimate`` pass, which also thins the seams'
full-resolution strips.

Measured (``scripts/bench_decimate_chunks.py``, BENCHMARKS.md): on the full-size random TRELLIS
mesh (364k faces) 0.26 s on 2 cores against 0.34 s in one pass, Chamfer error 0.020 % of the extent
against 0.022 %; ``tests/mesh/test_decimate_chunks.py`` requires closed, manifold output.

Colours: each chunk's input vertex gives its colour to the nearest output vertex of its chunk, and
an output vertex takes the mean of those it got (a box filter like ``decimate``'s collapse history,
which pyfqmr does not return), or, when it got none, its nearest input vertex's colour; the final
pass then averages them as ``decimate`` does.

The pool's processes start with the first large mesh, not with the stage: smaller meshes (the
tests', TripoSR's) never pay for them, and the first large one pays once (0.84 s against 0.35 s
for the next ones on a 444k-face mesh, 2 cores).
"""

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import psutil
import pyfqmr
from scipy.spatial import cKDTree

from gen3d.mesh.decimate import AGGRESSIVENESS, cluster_mean, decimate
from gen3d.results import MeshAsset

logger = logging.getLogger(__name__)

#: Cuts per axis: 8 chunks, one per core of a small server; more made the seams' share grow.
DIVISIONS = (2, 2, 2)
#: Faces the welded mesh keeps for the final pass, as a multiple of the target: 1.5 kept the one-pass
#: Chamfer error; 1.2 raised it by a sixth (the seams' strips had too little left to give).
OVERSHOOT = 1.5


@dataclass(frozen=True)
class Chunk:
    """One chunk's share of a mesh, in its own vertex numbering.

    Attributes:
        vertices: (V, 3) float32 positions, as the mesh holds them.
        faces: (F, 3) int32 indices into ``vertices``.
        colors: (V, 3) uint8 colours.
        seam: (V,) bool: the vertex is also used by another chunk's faces (locked).
        target: faces this chunk should keep.

    The mesh's own compact dtypes: a chunk crosses a pipe to its worker, which widens them; float64
    copies made before the pipe tripled the bytes (17.8 MB against 6 MB for a 364k-face mesh).
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    seam: np.ndarray
    target: int


@dataclass(frozen=True)
class DecimatedChunk:
    """A chunk after decimation: its vertices, faces, colours, and for each vertex the chunk-local
    index of the seam vertex it is (-1 for the others)."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    seam_index: np.ndarray


def chunk_labels(vertices: np.ndarray, faces: np.ndarray, divisions: tuple[int, ...] = DIVISIONS) -> np.ndarray:
    """Chunk id (F,) of each face: the quantile cell of its first corner, ``divisions`` cuts per axis."""
    # A face goes where its first corner is: a third of the work of its centroid, and as compact.
    corners = vertices[faces[:, 0]]
    label = np.zeros(len(faces), dtype=np.int64)
    for axis, cuts in enumerate(divisions):
        edges = np.quantile(corners[:, axis], np.linspace(0.0, 1.0, cuts + 1)[1:-1])
        # Counting the edges below is searchsorted's answer, and several times faster for a few cuts.
        label = label * cuts + (corners[:, axis, None] > edges).sum(axis=1)
    return label


def split(mesh: MeshAsset, labels: np.ndarray, target_faces: int) -> tuple[list[Chunk], list[np.ndarray]]:
    """The chunks of ``mesh`` by face label, and each chunk's vertices' indices in ``mesh``."""
    chunk_count = int(labels.max()) + 1
    # A vertex is on a seam when faces of two or more chunks use it: its lowest and highest differ.
    corner_labels, corners = np.repeat(labels, 3), mesh.faces.reshape(-1)
    lowest = np.full(len(mesh.vertices), chunk_count, dtype=np.int64)
    highest = np.full(len(mesh.vertices), -1, dtype=np.int64)
    np.minimum.at(lowest, corners, corner_labels)
    np.maximum.at(highest, corners, corner_labels)
    on_seam = (highest >= 0) & (lowest != highest)
    # Few labels: a stable sort of small integers is numpy's radix sort, several times a comparison sort.
    order = np.argsort(labels.astype(np.int16 if chunk_count <= 2**15 else np.int64), kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(chunk_count + 1))
    chunks, used_lists = [], []
    for first, last in zip(bounds[:-1], bounds[1:], strict=True):
        if first == last:
            continue
        faces = mesh.faces[order[first:last]]
        in_chunk = np.zeros(len(mesh.vertices), dtype=bool)
        in_chunk[faces.reshape(-1)] = True
        used = np.flatnonzero(in_chunk)
        local = np.cumsum(in_chunk) - 1
        chunks.append(
            Chunk(
                vertices=mesh.vertices[used].astype(np.float32, copy=False),
                faces=local[faces].astype(np.int32),
                colors=mesh.vertex_colors[used],
                seam=on_seam[used],
                target=max(4, round(OVERSHOOT * target_faces * len(faces) / len(mesh.faces))),
            )
        )
        used_lists.append(used)
    return chunks, used_lists


def seam_positions(chunk: Chunk, vertices: np.ndarray) -> np.ndarray:
    """For each of ``vertices`` (a decimated chunk's), the chunk-local index of the seam vertex at
    exactly its position, or -1. Locked vertices keep their positions bit for bit."""
    seam = np.flatnonzero(chunk.seam)
    found = np.full(len(vertices), -1, dtype=np.int64)
    if len(seam) == 0:
        return found
    keys = chunk.vertices[seam].astype(np.float64)
    order = np.lexsort(keys.T[::-1])
    sorted_keys = keys[order]
    # Row-wise binary search over the lexicographically sorted seam positions.
    view = np.ascontiguousarray(sorted_keys).view([("x", "f8"), ("y", "f8"), ("z", "f8")]).reshape(-1)
    query = np.ascontiguousarray(vertices, dtype=np.float64).view([("x", "f8"), ("y", "f8"), ("z", "f8")]).reshape(-1)
    slot = np.minimum(np.searchsorted(view, query), len(view) - 1)
    hit = view[slot] == query
    found[hit] = seam[order[slot[hit]]]
    return found


def exit_with_owner(owner: int, poll_s: float = 1.0) -> None:
    """Pool initializer: end this worker once ``owner``, the process that made the pool, is gone.

    A replica killed outright (SIGKILL, OOM) never shuts its pool down. Its workers' parent is the
    fork server, and every forkserver child holds the server's keep-alive pipe open, so neither
    would notice: they would idle on, orphaned. The owner's start time guards against a reused pid.
    """
    started = psutil.Process(owner).create_time()

    def owner_alive() -> bool:
        try:
            process = psutil.Process(owner)
            return process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def watch() -> None:
        while owner_alive():
            time.sleep(poll_s)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-owner", daemon=True).start()


def decimate_chunk(chunk: Chunk) -> DecimatedChunk:
    """Decimate one chunk with its seam locked (runs in a pool process)."""
    positions = chunk.vertices.astype(np.float64)  # pyfqmr's type; float32 values convert exactly
    simplifier = pyfqmr.Simplify()
    simplifier.setMesh(positions, chunk.faces)
    simplifier.simplify_mesh(
        target_count=chunk.target, aggressiveness=AGGRESSIVENESS, preserve_border=True, verbose=False
    )
    vertices, faces, _ = simplifier.getMesh()
    vertices = np.asarray(vertices, dtype=np.float64)
    _, nearest = cKDTree(vertices).query(positions)
    colors = cluster_mean(chunk.colors, nearest, len(vertices))
    # An output vertex that is no input vertex's nearest would be black: it takes its own nearest's.
    lonely = np.flatnonzero(np.bincount(nearest, minlength=len(vertices)) == 0)
    if len(lonely):
        colors[lonely] = chunk.colors[cKDTree(positions).query(vertices[lonely])[1]]
    return DecimatedChunk(vertices, np.asarray(faces, dtype=np.int64), colors, seam_positions(chunk, vertices))


def weld(parts: list[DecimatedChunk], used_lists: list[np.ndarray]) -> MeshAsset:
    """One mesh from decimated chunks: each seam vertex once (by its index in the source mesh)."""
    source_ids = np.concatenate(
        [np.where(part.seam_index >= 0, used[part.seam_index], -1) for part, used in zip(parts, used_lists, strict=True)]
    )
    on_seam = source_ids >= 0
    _, seam_slot = np.unique(source_ids[on_seam], return_inverse=True)
    merged = np.empty(len(source_ids), dtype=np.int64)
    merged[on_seam] = seam_slot
    merged[~on_seam] = seam_slot.max(initial=-1) + 1 + np.arange((~on_seam).sum())
    count = int(merged.max()) + 1
    vertices = np.empty((count, 3), dtype=np.float64)
    colors = np.empty((count, 3), dtype=np.float64)
    vertices[merged] = np.concatenate([part.vertices for part in parts])
    colors[merged] = np.concatenate([part.colors for part in parts])
    offsets = np.cumsum([0] + [len(part.vertices) for part in parts[:-1]])
    faces = np.concatenate([merged[part.faces + offset] for part, offset in zip(parts, offsets, strict=True)])
    return MeshAsset(vertices.astype(np.float32), faces, np.round(colors).astype(np.uint8))


class ChunkedDecimator:
    """``decimate`` for meshes above ``min_faces`` faces, in chunks on ``workers`` processes.

    Args:
        workers: pool processes (at least 2: one process gains nothing over ``decimate``).
        min_faces: meshes with at most this many faces take ``decimate`` in this process.
    """

    def __init__(self, workers: int, min_faces: int) -> None:
        if workers < 2:
            raise ValueError(f"workers: expected >= 2, got {workers}")
        self.workers = workers
        self.min_faces = min_faces
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # forkserver: a fork of a process that holds CUDA or Ray's threads is not safe.
                context = multiprocessing.get_context("forkserver")
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=context, initializer=exit_with_owner, initargs=(os.getpid(),)
                )
                logger.info("export: decimating large meshes in chunks on %d processes", self.workers)
            return self._pool

    def __call__(self, mesh: MeshAsset, target_faces: int) -> MeshAsset:
        """``decimate(mesh, target_faces)``, chunked when ``mesh`` is large."""
        if len(mesh.faces) <= max(self.min_faces, OVERSHOOT * target_faces):
            return decimate(mesh, target_faces)
        chunks, used_lists = split(mesh, chunk_labels(mesh.vertices, mesh.faces), target_faces)
        parts = list(self._executor().map(decimate_chunk, chunks))
        return decimate(weld(parts, used_lists), target_faces)

    def close(self) -> None:
        """Stop the pool's processes (a later large mesh starts them again)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
