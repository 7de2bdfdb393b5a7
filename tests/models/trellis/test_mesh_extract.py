"""Mesh extraction from the mesh decoder's sparse output, against the reference's SparseFeatures2Mesh."""

import types

import pytest
import torch

from gen3d.models.trellis.flexicubes import CUBE_CORNERS
from gen3d.models.trellis.mesh_extract import (
    COLOR_CHANNELS,
    DEFORM_CHANNELS,
    MESH_CHANNELS,
    MESH_CHANNELS_WITH_COLOR,
    SDF_CHANNELS,
    extract_mesh,
)
from tests.models.trellis.reference import assert_parity, reference_outputs

SEED = 5
#: name -> (resolution, with colour)
CASES = {"color": (16, True), "plain": (12, False)}
RADIUS = 0.3037  # no grid vertex exactly on the sphere


def _shell(resolution: int, generator: torch.Generator, solid: bool = False) -> torch.Tensor:
    """[N, 3] long cubes within 1.2 cubes of the sphere (or the whole ball, 2 cubes wider), in random order.

    A hollow shell leaves the grid vertices inside it untouched, hence outside: TRELLIS's decoder
    output looks like that, and FlexiCubes then also meshes the shell's inner boundary.
    """
    axis = torch.arange(resolution)
    cubes = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).view(-1, 3)
    distance = ((cubes.float() + 0.5) / resolution - 0.5).norm(dim=1) - RADIUS
    shell = cubes[distance < 2 / resolution] if solid else cubes[distance.abs() < 1.2 / resolution]
    return shell[torch.randperm(len(shell), generator=generator)]


def _corner_sdf(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """[N, 8] the sphere's exact sdf at each cube's corners."""
    corners = (coords[:, None] + CUBE_CORNERS).float() / resolution - 0.5
    return corners.norm(dim=-1) - RADIUS


def _inputs(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A planted sphere's sdf, disagreeing a little between cubes, and random everything else."""
    resolution, with_color = CASES[case]
    generator = torch.Generator().manual_seed(SEED + len(case))
    coords = _shell(resolution, generator)
    feats = torch.randn(len(coords), MESH_CHANNELS_WITH_COLOR if with_color else MESH_CHANNELS, generator=generator)
    noise = 0.3 / resolution * torch.randn(len(coords), 8, generator=generator)
    feats[:, SDF_CHANNELS] = _corner_sdf(coords, resolution) + noise
    return coords, feats


def _reference(case: str) -> dict[str, torch.Tensor]:
    def compute(ref: types.SimpleNamespace) -> dict[str, torch.Tensor]:
        resolution, with_color = CASES[case]
        coords, feats = _inputs(case)
        batch_coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords.int()], dim=1)
        extractor = ref.representations.mesh.SparseFeatures2Mesh(device="cpu", res=resolution, use_color=with_color)
        mesh = extractor(ref.sparse.SparseTensor(feats=feats, coords=batch_coords), training=False)
        outputs = {"vertices": mesh.vertices, "faces": mesh.faces}
        return outputs | ({"colors": mesh.vertex_attrs} if with_color else {})

    return reference_outputs(f"mesh_extract_{case}", compute)


@pytest.mark.parametrize("case", sorted(CASES))
def test_mesh_matches_the_reference(case: str) -> None:
    coords, feats = _inputs(case)
    mesh = extract_mesh(coords, feats, resolution=CASES[case][0])
    ours = {"vertices": mesh.vertices, "faces": mesh.faces}
    if CASES[case][1]:
        ours["colors"] = mesh.vertex_attrs
    assert_parity(ours, _reference(case))


def test_planted_sphere_gives_a_closed_outward_surface_of_its_colour() -> None:
    resolution = 20
    coords = _shell(resolution, torch.Generator().manual_seed(SEED), solid=True)
    feats = torch.zeros(len(coords), MESH_CHANNELS_WITH_COLOR)
    # The reference lowers every sdf by one cube width; adding it back plants the sphere exactly.
    feats[:, SDF_CHANNELS] = _corner_sdf(coords, resolution) + 1 / resolution
    rgb_logits = torch.tensor([2.0, -1.0, 0.0, 0.5, 0.5, 0.5])
    feats[:, COLOR_CHANNELS] = rgb_logits.repeat(8)
    mesh = extract_mesh(coords, feats, resolution=resolution)

    assert not mesh.is_empty and mesh.faces.dtype == torch.long
    edges = torch.cat([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]])
    count = len(mesh.vertices)
    keys, reverse = edges[:, 0] * count + edges[:, 1], edges[:, 1] * count + edges[:, 0]
    assert torch.unique(keys).numel() == len(keys)  # each directed edge once ...
    assert torch.equal(torch.sort(keys).values, torch.sort(reverse).values)  # ... and its twin: closed, oriented
    assert (mesh.vertices.norm(dim=1) - RADIUS).abs().max() < 0.5 / resolution
    a, b, c = (mesh.vertices[mesh.faces[:, i]] for i in range(3))
    assert float((a * torch.cross(b, c, dim=1)).sum()) > 0  # normals point outside
    torch.testing.assert_close(mesh.vertex_attrs, torch.sigmoid(rgb_logits).expand(count, -1))
    torch.testing.assert_close(mesh.colors, mesh.vertex_attrs[:, :3])


def test_a_uniform_deformation_translates_the_mesh_by_it() -> None:
    resolution = 12
    coords = _shell(resolution, torch.Generator().manual_seed(SEED), solid=True)
    feats = torch.zeros(len(coords), MESH_CHANNELS)
    feats[:, SDF_CHANNELS] = _corner_sdf(coords, resolution)
    still = extract_mesh(coords, feats, resolution)
    feats[:, DEFORM_CHANNELS] = 100.0  # saturates the tanh: every grid vertex moves half a cube along +x, +y, +z
    moved = extract_mesh(coords, feats, resolution)
    assert torch.equal(moved.faces, still.faces)  # deformation moves vertices, never topology
    torch.testing.assert_close(moved.vertices - still.vertices, torch.full_like(still.vertices, 0.5 / resolution))


def test_input_feats_are_not_modified() -> None:
    coords, feats = _inputs("plain")
    before = feats.clone()
    extract_mesh(coords, feats, resolution=CASES["plain"][0])
    assert torch.equal(feats, before)


def test_empty_and_outside_inputs_give_an_empty_mesh() -> None:
    empty = extract_mesh(torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, MESH_CHANNELS_WITH_COLOR), 8)
    assert empty.is_empty and empty.vertex_attrs.shape == (0, 6)
    outside = torch.zeros(2, MESH_CHANNELS)
    outside[:, SDF_CHANNELS] = 1.0
    assert extract_mesh(torch.tensor([[1, 1, 1], [4, 5, 6]]), outside, 8).is_empty


@pytest.mark.parametrize(
    ("coords", "feats", "message"),
    [
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 60), "feats: expected 53 or 101 channels"),
        (torch.zeros(2, 3), torch.zeros(2, MESH_CHANNELS), "coords: expected an integer"),
        (torch.tensor([[0, 0, 8], [1, 1, 1]]), torch.zeros(2, MESH_CHANNELS), r"coords: expected values in \[0, 8\)"),
        (torch.tensor([[2, 3, 4], [2, 3, 4]]), torch.zeros(2, MESH_CHANNELS), "each cube once"),
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, MESH_CHANNELS), r"feats: expected a float \[2, C\]"),
    ],
)
def test_bad_inputs_are_rejected(coords: torch.Tensor, feats: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        extract_mesh(coords, feats, 8)
