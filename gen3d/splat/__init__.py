"""Gaussian-splat output: surface sampling, validator PLY I/O, checks and CPU renderers.

Modules: ``from_mesh`` (mesh -> gaussians), ``ply`` (exact validator layout), ``normalise``
(centre + unit extent), ``validate`` (rejection rules), ``render`` (validators' cameras, splat
and mesh rasterisers).
"""

from gen3d.splat.from_mesh import (
    SurfaceSamples,
    gaussians_from_samples,
    mesh_to_gaussians,
    sample_surface,
)
from gen3d.splat.normalise import normalise_gaussians
from gen3d.splat.ply import SPLAT_FIELDS, read_splat_ply, write_splat_ply
from gen3d.splat.validate import SplatReport, validate_splat

__all__ = [
    "SPLAT_FIELDS",
    "SplatReport",
    "SurfaceSamples",
    "gaussians_from_samples",
    "mesh_to_gaussians",
    "normalise_gaussians",
    "read_splat_ply",
    "sample_surface",
    "validate_splat",
    "write_splat_ply",
]
