"""What the runtime reports of its worker processes, for metrics and traces (sans-IO).

Kept apart from the supervision code so that the metrics (sans-IO themselves) can
name these without importing Trio or shared memory.
"""

from __future__ import annotations

import attrs

__all__ = ["RECYCLED", "RESTARTED", "WorkerCall"]

RESTARTED = "worker_restarted"
"""What a node counts when a new worker replaced one that failed."""
RECYCLED = "worker_recycled"
"""What a node counts when a new worker replaced one over its memory budget."""


@attrs.frozen
class WorkerCall:
    """One input's trip through a worker process, as the runtime saw it end.

    Attributes:
        node_id: The node.
        node_type: Its type.
        pid: The worker's process id.
        sent: When the runtime sent the input (``time.time_ns()``).
        round_trip: Seconds from sending the input to its EndOfInput.
        worked_ns: When the node in the worker began and finished the input
            (``time.time_ns()``), if the worker said.
        flush: It was the flush at end of input, not an input.
    """

    node_id: str
    node_type: str
    pid: int | None
    sent: int
    round_trip: float
    worked_ns: tuple[int, int] | None
    flush: bool = False

    @property
    def hop(self) -> float | None:
        """What the worker added to the input: the round trip minus the node's own work."""
        if self.worked_ns is None:
            return None
        started, ended = self.worked_ns
        return max(0.0, self.round_trip - (ended - started) / 1e9)
