"""What a running session reports to its caller: its results and each node's counters.

A :class:`Result` is what :meth:`~remotemedia.session.Session.receive` returns (a sink's
output, or the report of an input a node lost); a :class:`NodeStats` is what the node
tasks count as they go (:attr:`~remotemedia.session.Session.stats`). Both are made by
the node tasks (:mod:`~remotemedia.session.node_task`) and read by the session handle,
so they live apart from either.
"""

from __future__ import annotations

import attrs

from remotemedia.errors import NodeError
from remotemedia.media import RuntimeData

__all__ = ["NodeStats", "Result"]


@attrs.frozen(slots=True)
class Result:
    """One output of a sink node, or the report of an input a node lost.

    Attributes:
        node_id: The sink node that produced it (for a failure: the failing node).
        sequence: The sequence number of the input that led to it.
        data: The output value (None for a failure).
        error: For a failure: the node lost this input (for example its worker
            process crashed and was restarted) but the session goes on.
    """

    node_id: str
    sequence: int
    data: RuntimeData | None
    error: NodeError | None = None


@attrs.define(slots=True)
class NodeStats:
    """Counters of one node in a session.

    Attributes:
        inputs: Inputs processed.
        outputs: Outputs produced.
        busy: Seconds spent inside the node's process() and flush().
        failures: Inputs lost to a failure the node recovered from.
        current: The sequence of the last input the node took (or flushes after),
            None before the first and once it has finished; see
            :meth:`~remotemedia.session.Session.working` for whether it is still at it.
    """

    inputs: int = 0
    outputs: int = 0
    busy: float = 0.0
    failures: int = 0
    current: int | None = None
