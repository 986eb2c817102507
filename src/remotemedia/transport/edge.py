"""What a gRPC edge gives the server that opened it: its port, its calls, a way to stop.

Each gRPC transport (:func:`~remotemedia.transport.native_server.open_native_edge`,
:func:`~remotemedia.transport.grpc_server.open_grpclib_edge`) is an async context
manager that listens while its block runs and closes its connections when it ends;
:func:`~remotemedia.transport.serving.serve` opens one beside the WebSocket edge and
the metrics endpoint, and drains them all together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from remotemedia.service.drain import CountedCalls

__all__ = ["Edge"]


@attrs.frozen
class Edge:
    """A listening gRPC edge.

    Attributes:
        port: The port it listens on (resolved when 0 was asked for).
        calls: Its calls, for the drain.
        stop_accepting: Say NOT_SERVING, give balancers ``drain_delay`` to notice,
            then accept no more connections (live ones go on).
    """

    port: int
    calls: CountedCalls
    stop_accepting: Callable[[], Awaitable[None]]
