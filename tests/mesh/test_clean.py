"""Mesh clean-up: degenerate/duplicate faces, unused vertices, floaters, outward winding, smoothing."""

import numpy as np
import pytest
import trimesh

from gen3d.mesh.clean import (
    clean,
    drop_degenerate_faces,
    drop_duplicate_faces,
    drop_floaters,
    drop_unreferenced_vertices,
    face_components,
    merge_coincident_vertices,
    orient_outward,
    taubin_smooth,
)
from gen3d.mesh.metrics import face_areas, signed_volumes
from gen3d.results import MeshAsset


def as_mesh(tm: trimesh.Trimesh) -> MeshAsset:
    """A MeshAsset whose red channel numbers the vertices (to check colours follow them)."""
    colors = np.zeros((len(tm.vertices), 3), np.uint8)
    colors[:, 0] = np.arange(len(tm.vertices)) % 256
    return MeshAsset(tm.vertices.astype(np.float32), tm.faces.astype(np.int64), colors)


def sphere(radius: float = 1.0, centre: tuple[float, float, float] = (0.0, 0.0, 0.0), subdivisions: int = 3
           ) -> trimesh.Trimesh:  # fmt: skip
    tm = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    tm.apply_translation(centre)
    return tm


def join(*parts: trimesh.Trimesh) -> MeshAsset:
    return as_mesh(trimesh.util.concatenate(list(parts)))


def test_degenerate_faces_are_dropped() -> None:
    mesh = as_mesh(sphere())
    v = len(mesh.vertices)
    # A collinear triple (zero area) and a face repeating an index.
    extra_vertices = np.array([[3, 0, 0], [4, 0, 0], [5, 0, 0]], np.float32)
    vertices = np.concatenate([mesh.vertices, extra_vertices])
    faces = np.concatenate([mesh.faces, [[v, v + 1, v + 2], [0, 0, 1]]])
    colors = np.concatenate([mesh.vertex_colors, np.zeros((3, 3), np.uint8)])
    cleaned = drop_degenerate_faces(MeshAsset(vertices, faces, colors))
    np.testing.assert_array_equal(cleaned.faces, mesh.faces)


def test_duplicate_faces_keep_the_first_in_either_winding() -> None:
    mesh = as_mesh(sphere())
    faces = np.concatenate([mesh.faces, mesh.faces[:5], mesh.faces[5:9, ::-1]])
    cleaned = drop_duplicate_faces(MeshAsset(mesh.vertices, faces, mesh.vertex_colors))
    np.testing.assert_array_equal(cleaned.faces, mesh.faces)


def test_unreferenced_vertices_go_and_faces_keep_their_corners() -> None:
    mesh = as_mesh(sphere())
    unused = np.array([[9, 9, 9], [8, 8, 8]], np.float32)
    vertices = np.concatenate([unused, mesh.vertices])  # shifts every index by two
    colors = np.concatenate([np.full((2, 3), 7, np.uint8), mesh.vertex_colors])
    cleaned = drop_unreferenced_vertices(MeshAsset(vertices, mesh.faces + 2, colors))
    assert len(cleaned.vertices) == len(mesh.vertices)
    np.testing.assert_array_equal(cleaned.vertices[cleaned.faces], mesh.vertices[mesh.faces])
    np.testing.assert_array_equal(cleaned.vertex_colors[cleaned.faces], mesh.vertex_colors[mesh.faces])


def test_floaters_below_the_share_are_dropped_and_the_largest_always_stays() -> None:
    big, medium, speck = sphere(1.0), sphere(0.3, (3, 0, 0)), sphere(0.03, (0, 3, 0))
    mesh = join(big, medium, speck)  # areas: 1 : 0.09 : 0.0009 of the big sphere
    kept = drop_floaters(mesh, 0.002)
    assert len(kept.faces) == len(big.faces) + len(medium.faces)
    assert kept.vertices[np.unique(kept.faces)][:, 1].max() < 2.0  # the speck at y = 3 is gone
    only_big = drop_floaters(mesh, 0.5)
    assert len(only_big.faces) == len(big.faces)
    # Two equal halves, each below the share: the largest is still kept.
    assert len(drop_floaters(join(sphere(1.0), sphere(1.0, (3, 0, 0))), 0.9).faces) == len(big.faces)
    with pytest.raises(ValueError, match="min_share"):
        drop_floaters(mesh, 1.0)


def test_face_components_separate_disjoint_parts() -> None:
    labels = face_components(join(sphere(), sphere(0.5, (3, 0, 0))).faces, 2 * len(sphere().vertices))
    assert len(np.unique(labels)) == 2


def test_inside_out_components_are_flipped_each_on_its_own() -> None:
    outward, inverted = sphere(1.0), sphere(0.5, (3, 0, 0))
    inverted.faces = inverted.faces[:, ::-1]
    mesh = join(outward, inverted)
    assert signed_volumes(mesh.vertices, mesh.faces)[len(outward.faces) :].sum() < 0
    fixed = orient_outward(mesh)
    labels = face_components(fixed.faces, len(fixed.vertices))
    volumes = np.bincount(labels, weights=signed_volumes(fixed.vertices, fixed.faces))
    assert (volumes > 0).all()
    np.testing.assert_array_equal(fixed.faces[: len(outward.faces)], mesh.faces[: len(outward.faces)])


def test_clean_marching_cubes_mesh_is_closed_outward_and_free_of_degenerates(blob: MeshAsset) -> None:
    inverted = MeshAsset(blob.vertices, blob.faces[:, ::-1].copy(), blob.vertex_colors)
    cleaned = clean(inverted)
    tm = trimesh.Trimesh(cleaned.vertices, cleaned.faces, process=False)
    assert tm.is_watertight
    assert signed_volumes(cleaned.vertices, cleaned.faces).sum() > 0
    assert face_areas(cleaned.vertices, cleaned.faces).min() > 0
    assert len(np.unique(np.sort(cleaned.faces, axis=1), axis=0)) == len(cleaned.faces)
    assert len(cleaned.faces) >= 0.999 * len(blob.faces)


def test_taubin_smoothing_removes_noise_without_shrinking() -> None:
    tm = sphere(0.5, subdivisions=4)
    rng = np.random.default_rng(0)
    radial = tm.vertices / np.linalg.norm(tm.vertices, axis=1, keepdims=True)
    noisy = as_mesh(tm)
    noisy = MeshAsset((tm.vertices + radial * rng.normal(0, 0.01, (len(radial), 1))).astype(np.float32), noisy.faces,
                      noisy.vertex_colors)  # fmt: skip
    smooth = taubin_smooth(noisy, iterations=10)
    before = np.linalg.norm(noisy.vertices, axis=1)
    after = np.linalg.norm(smooth.vertices, axis=1)
    assert after.std() < 0.5 * before.std()
    assert abs(after.mean() - 0.5) < 0.005  # plain Laplacian smoothing would shrink it
    np.testing.assert_array_equal(smooth.faces, noisy.faces)


def test_coincident_vertices_merge_so_the_mesh_stays_closed() -> None:
    tm = sphere()
    mesh = as_mesh(tm)
    # Split vertex 0: a copy at the same position takes over some of its faces.
    vertices = np.concatenate([mesh.vertices, mesh.vertices[:1]])
    faces = mesh.faces.copy()
    uses = np.flatnonzero((faces == 0).any(axis=1))[:2]
    faces[uses] = np.where(faces[uses] == 0, len(mesh.vertices), faces[uses])
    colors = np.concatenate([mesh.vertex_colors, mesh.vertex_colors[:1]])
    split = MeshAsset(vertices, faces, colors)
    assert not trimesh.Trimesh(split.vertices, split.faces, process=False).is_watertight
    merged = drop_unreferenced_vertices(merge_coincident_vertices(split))
    assert trimesh.Trimesh(merged.vertices, merged.faces, process=False).is_watertight
    assert len(merged.vertices) == len(mesh.vertices) and len(merged.faces) == len(mesh.faces)
