"""What an edge implements for each call: its connection to the client, as bytes.

The call runner (:mod:`remotemedia.service.calls`) does everything else, so an edge is
this adapter and the code that accepts its connections. A fault-injection kit wraps
a :class:`Wire` (:attr:`remotemedia.service.seams.Seams.wire`) to delay, corrupt or
drop messages, or the connection, with the runner none the wiser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["ClientGone", "Wire"]


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
