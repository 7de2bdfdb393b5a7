"""The checkout's top-level entry to the Serve application, kept for ``import_path: graph:build_app``.

The builder lives in ``deployments/graph.py``, which installs with the package; gen3d's serve
configs name ``deployments.graph:build_app`` so that they resolve in a wheel too.
"""

from deployments.graph import GraphArgs, build_app

__all__ = ["GraphArgs", "build_app"]
