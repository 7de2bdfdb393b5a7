"""The drain board: one shutdown switch for every ingress replica, and what they still hold.

A graceful stop must finish the work in flight before Serve tears the graph down (its HTTP
proxy dies at once on shutdown, cutting every open connection). The launcher
(``gen3d.service.launcher``) flips the switch through any ingress replica; each replica reads it with
its heartbeat, refuses new work with 503 and reports its count of requests and jobs in flight,
and the launcher stops Serve once the total reaches zero or its time is up.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

#: A replica not heard from for this long no longer counts (it died or was replaced).
HEARTBEAT_STALE_S = 5.0


@dataclass(frozen=True)
class DrainStatus:
    """Whether a drain was asked for, and the work the live replicas still hold.

    Attributes:
        draining: the switch is on.
        in_flight: requests and jobs the live replicas reported last.
        replicas: replicas heard from within ``HEARTBEAT_STALE_S``.
        acknowledged: draining, and every live replica has reported since the switch, so none
            admits work any more.
        settled: acknowledged, and no replica holds any work: safe to stop Serve.
    """

    draining: bool
    in_flight: int
    replicas: int
    acknowledged: bool
    settled: bool


class DrainBoard:
    """The switch and the replicas' heartbeats.

    Args:
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.draining = False
        self._clock = clock
        self._started = 0.0
        self._beats: dict[str, tuple[float, int]] = {}

    def start(self) -> None:
        """Ask every replica to stop admitting work."""
        if not self.draining:
            self.draining, self._started = True, self._clock()

    def heartbeat(self, replica: str, in_flight: int) -> bool:
        """Record a replica's work in flight; return whether it must drain."""
        self._beats[replica] = (self._clock(), in_flight)
        return self.draining

    def status(self) -> DrainStatus:
        """The switch and the total in flight over replicas heard from recently."""
        now = self._clock()
        fresh = [(seen, count) for seen, count in self._beats.values() if now - seen <= HEARTBEAT_STALE_S]
        in_flight = sum(count for _, count in fresh)
        acknowledged = self.draining and all(seen > self._started for seen, _ in fresh)
        return DrainStatus(self.draining, in_flight, len(fresh), acknowledged, acknowledged and in_flight == 0)
