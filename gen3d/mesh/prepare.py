"""The two steps the service runs on a raw marching-cubes mesh: simplify it, then texture it.

``simplify`` decimates first and cleans after: decimating the raw mesh is safe (it is closed and
consistently wound; zero-area faces are the first edges to collapse) and cleaning ~20k faces
instead of ~200k (a grid-256 mesh) saved about 80 ms a request (10 vs 94 ms on one core here). ``texture`` unwraps
and bakes, both on ``device``; ``color_fn`` is where the colours come from (TripoSR's colour field
in the service, which runs ``simplify`` on the CPU export stage and ``texture`` on the GPU one).
"""

from collections.abc import Callable

import torch

from gen3d.mesh.bake import ColorFn, bake_texture
from gen3d.mesh.clean import MIN_COMPONENT_SHARE, clean
from gen3d.mesh.decimate import decimate
from gen3d.mesh.unwrap import DEFAULT_GUTTER, unwrap
from gen3d.results import MeshAsset, TexturedMesh

#: ``decimate``'s signature: (mesh, target faces) -> the decimated mesh.
Decimator = Callable[[MeshAsset, int], MeshAsset]


def simplify(mesh: MeshAsset, target_faces: int | None, min_component_share: float = MIN_COMPONENT_SHARE,
             smooth_iterations: int = 0, decimator: Decimator = decimate) -> MeshAsset:  # fmt: skip
    """Decimate to ``target_faces`` (None: keep all), then clean (see ``gen3d.mesh.clean.clean``).

    Args:
        mesh: model-frame mesh with vertex colours, e.g. ``TripoSR.extract_mesh``'s.
        target_faces: face budget; the cleaned result may have a few fewer.
        min_component_share: floaters below this share of the surface area are dropped.
        smooth_iterations: Taubin pairs after decimation (0: off). ``scripts/bench_mesh.py``
            measures them: 5 halve the normal error of a terraced surface (a field stepping within
            a cell) for 20 ms at 20k faces, and change a smooth one by less than 0.1°.
        decimator: ``decimate`` or a drop-in for it (the export stage's ``ChunkedDecimator``).
    """
    if target_faces is not None:
        mesh = decimator(mesh, target_faces)
    return clean(mesh, min_component_share, smooth_iterations)


def texture(mesh: MeshAsset, color_fn: ColorFn, texture_size: int = 1024, device: torch.device | str = "cpu",
            gutter: int = DEFAULT_GUTTER) -> TexturedMesh:  # fmt: skip
    """Unwrap a clean mesh into a ``texture_size``² atlas and bake ``color_fn`` into it, both on ``device``.

    Args:
        mesh: a clean, model-frame mesh (``simplify``'s output).
        color_fn: model-frame points (N, 3) float32 on ``device`` -> colours (N, 3) in [0, 1].
        texture_size: atlas side in texels.
        device: where the unwrap and the bake run (the colour field's device).
        gutter: empty texels between islands.
    """
    return bake_texture(unwrap(mesh, texture_size, gutter, device), color_fn, device)
