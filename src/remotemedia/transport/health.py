"""The ``grpc.health.v1`` service's state, on Trio: what each service reports, and changes.

A server is SERVING from start until it begins to drain, then NOT_SERVING at once
(before its sessions end), so a load balancer stops sending it new calls while the
live ones finish. ``""`` is the server as a whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio
from grpclib.health.v1.health_pb2 import HealthCheckResponse

__all__ = ["SERVICES", "HealthState"]

SERVICES = (
    "",
    "remotemedia.v1.StreamingPipelineService",
    "remotemedia.v1.PipelineExecutionService",
)
"""The names the health service answers for."""

SERVING: int = HealthCheckResponse.SERVING
NOT_SERVING: int = HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: int = HealthCheckResponse.SERVICE_UNKNOWN


class HealthState:
    """Every service's serving status; Watch callers wake on each change."""

    def __init__(self) -> None:
        self._status: dict[str, int] = dict.fromkeys(SERVICES, SERVING)
        self._changed = trio.lowlevel.ParkingLot()
        self._draining = False

    def status(self, service: str) -> int:
        """The service's status, or SERVICE_UNKNOWN for a name not served."""
        return self._status.get(service, SERVICE_UNKNOWN)

    def drain(self) -> None:
        """Report NOT_SERVING for every service, for good (the server is shutting down)."""
        self._draining = True
        self._status = dict.fromkeys(self._status, NOT_SERVING)
        self._changed.unpark_all()

    async def watch(self, service: str) -> AsyncIterator[int]:
        """The service's status now, then each time it changes.

        Ends once NOT_SERVING has been reported for a draining server, so that
        watchers do not hold up its drain.
        """
        last = None
        while True:
            current = self.status(service)
            if current != last:
                last = current
                yield current
            if self._draining:
                return
            await self._changed.park()
