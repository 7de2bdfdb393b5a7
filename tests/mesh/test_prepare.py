"""The service's two steps on a raw marching-cubes mesh: simplify, then texture from a colour field."""

import numpy as np
import torch

from gen3d.mesh.metrics import signed_volumes
from gen3d.mesh.planted import stripes
from gen3d.mesh.prepare import simplify, texture
from gen3d.results import MeshAsset


def test_simplify_then_texture(blob: MeshAsset) -> None:
    far = np.array([[0.8, 0.8, 0.8], [0.81, 0.8, 0.8], [0.8, 0.81, 0.8]], np.float32)  # the blob ends at 0.56
    speck = MeshAsset(far, np.array([[0, 1, 2]]), blob.vertex_colors[:3])
    raw = MeshAsset(
        np.concatenate([blob.vertices, speck.vertices]),
        np.concatenate([blob.faces, speck.faces + len(blob.vertices)]),
        np.concatenate([blob.vertex_colors, speck.vertex_colors]),
    )
    simple = simplify(raw, 10_000)
    assert 9_900 <= len(simple.faces) <= 10_000
    assert simple.vertices.max() < 0.6  # the floating triangle is gone
    assert signed_volumes(simple.vertices, simple.faces).sum() > 0
    textured = texture(simple, stripes, texture_size=256)
    assert textured.texture.shape == (256, 256, 3) and len(textured.faces) == len(simple.faces)
    # The texel under each vertex holds the field's colour there.
    texel = np.minimum((textured.uvs * 256).astype(int), 255)
    sampled = textured.texture[texel[:, 1], texel[:, 0]] / 255.0
    expected = stripes(torch.from_numpy(textured.vertices)).numpy()
    assert np.median(np.abs(sampled - expected)) < 0.02


def test_simplify_without_a_budget_only_cleans(blob_20k: MeshAsset) -> None:
    assert len(simplify(blob_20k, None).faces) == len(blob_20k.faces)
