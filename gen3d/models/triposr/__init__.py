"""Our own TripoSR: loads the official stabilityai/TripoSR weights unchanged (see specs/triposr.md)."""

from gen3d.models.triposr.config import TripoSRConfig
from gen3d.models.triposr.loading import CheckpointError
from gen3d.models.triposr.system import TripoSR, mesh_to_trimesh

__all__ = ["CheckpointError", "TripoSR", "TripoSRConfig", "mesh_to_trimesh"]
