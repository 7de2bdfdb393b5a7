"""The job store as the ingress calls it: ``SharedState``'s methods, unavailability made one error.

While the store's replica restarts, Ray says so in several ways (the actor died, the replica or
the deployment is unavailable); while its Redis is down the store itself says
``StoreUnavailable``. Both become ``StoreUnavailable`` here, and a call may wait a while for the
store to come back before it raises. The store's refusals (``UnknownJob``, ``StoreFull``,
``LeaseLost``) arrive as themselves, not wrapped in Ray's task error.
"""

import asyncio
import time
from typing import Any

from ray.exceptions import RayActorError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from gen3d.service.job_store import JobStoreError, StoreUnavailable

#: What Ray raises while the store's replica is dead or restarting.
REPLICA_GONE = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)
FIRST_RETRY_S = 0.1
MAX_RETRY_S = 1.0


def unwrapped(exc: JobStoreError) -> JobStoreError:
    """The store's own exception, out of Ray's wrapper (whose message repeats the replica's traceback)."""
    return getattr(exc, "cause", exc)


class StoreClient:
    """Calls the store's methods on the ``SharedState`` deployment.

    Args:
        state: the ``SharedState`` handle.
    """

    def __init__(self, state: DeploymentHandle) -> None:
        self.state = state

    async def call(self, method: str, *args: Any, patience_s: float = 0.0, **kwargs: Any) -> Any:
        """``SharedState.<method>(*args, **kwargs)``; while the store is unavailable, retry for up
        to ``patience_s`` seconds, then raise ``StoreUnavailable``.

        Raises:
            JobStoreError: the store refused (unknown job, full, lease lost) or stayed unavailable.
        """
        deadline = time.monotonic() + patience_s
        delay = FIRST_RETRY_S
        while True:
            try:
                return await getattr(self.state, method).remote(*args, **kwargs)
            except REPLICA_GONE as exc:
                error: JobStoreError = StoreUnavailable(f"the job store's replica is unavailable ({type(exc).__name__})")
            except StoreUnavailable as exc:
                error = unwrapped(exc)
            except JobStoreError as exc:
                raise unwrapped(exc) from None
            if time.monotonic() + delay > deadline:
                raise error
            await asyncio.sleep(delay)
            delay = min(2 * delay, MAX_RETRY_S)
