"""What an edge implements for each call: its connection to the client, as bytes.

The call runner (:mod:`remotemedia.service.calls`) does everything else, so an edge is
this adapter and the code that accepts its connections. A fault-injection kit wraps
a :class:`Wire` (:attr:`remotemedia.service.seams.Seams.wire`) to delay, corrupt or
drop messages, or the connection, with the runner none the wiser.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

import attrs

__all__ = ["CallOrigin", "ClientGone", "Wire"]

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


@attrs.define
class CallOrigin:
    """Where a call comes from, as its edge saw it: for logs, metrics and traces.

    Attributes:
        edge: ``grpc``, ``websocket``, ``webrtc`` (or a kit's own name).
        traceparent: A W3C ``traceparent`` the client sent (gRPC metadata, the
            WebSocket's header or first message, the WebRTC offer) to put the session
            in its trace; None if it sent none or one that is malformed (ignored, as
            the W3C spec says: the session then starts a trace of its own).
    """

    edge: str = "grpc"
    traceparent: str | None = None

    def take_traceparent(self, value: object) -> None:
        """Keep ``value`` as the traceparent if it is one (a W3C version-00 header)."""
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(value, str) and _TRACEPARENT.match(value.strip().lower()):
            self.traceparent = value.strip().lower()


class ClientGone(Exception):
    """Raised by :meth:`Wire.receive`: the client went away (a closed tab, a dropped socket).

    Its session is cancelled at once: nobody is left to take its results.
    """


class Wire(Protocol):
    """One call's connection to its client, as an edge implements it."""

    deliver: Callable[[bytes], bool] | None
    """Set by the runner while the call runs. An edge that reads requests in a task of
    its own may hand one straight to the session with it, but only when it holds no
    earlier one (rule 1); False: not taken, keep it for :meth:`receive`."""

    async def receive(self) -> bytes | None:
        """The next request's bytes; None once the client has half-closed.

        Raises:
            ClientGone: The client went away.
            Exception: The request stream is malformed (the call ends with it).
        """

    def send_now(self, data: bytes) -> bool:
        """Write a response now if nothing would have to wait; False: nothing written."""

    async def send(self, data: bytes) -> None:
        """Write a response, waiting while the client does not read.

        Raises:
            trio.BrokenResourceError: The client is gone.
        """

    def abort(self) -> None:
        """Drop the client's connection now."""
