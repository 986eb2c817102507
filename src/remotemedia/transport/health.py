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

    def status(self, service: str) -> int:
        """The service's status, or SERVICE_UNKNOWN for a name not served."""
        return self._status.get(service, SERVICE_UNKNOWN)

    def set_all(self, status: int) -> None:
        """Report ``status`` for every service (NOT_SERVING when draining)."""
        if any(value != status for value in self._status.values()):
            self._status = dict.fromkeys(self._status, status)
            self._changed.unpark_all()

    async def watch(self, service: str) -> AsyncIterator[int]:
        """The service's status now, then each time it changes (until cancelled)."""
        last = None
        while True:
            current = self.status(service)
            if current != last:
                last = current
                yield current
            else:
                await self._changed.park()
