"""Ray Serve deployments: thin classes around the ``gen3d`` stages. Wired only by ``graph.py``."""
