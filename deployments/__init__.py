"""Ray Serve deployments: thin classes around the ``gen3d`` stages. Wired only by ``deployments/graph.py``.

This package is imported first in Serve's build task and in every replica, so it silences the
known, harmless third-party start-up warnings there before diffusers or torchao load.
"""

from gen3d.service.logs import quiet_known_warnings

quiet_known_warnings()
