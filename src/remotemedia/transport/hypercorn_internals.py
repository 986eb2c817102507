"""hypercorn's internals, patched from this module only, when the WebSocket edge starts.

Importing this module changes nothing: :func:`apply` patches hypercorn, and
:func:`~remotemedia.transport.web.start_web` calls it only when ``--web-port`` asks
for the browser edge (the process's only user of hypercorn). The patches are written
for the hypercorn versions in :data:`WRITTEN_FOR` (``tests/unit/test_third_party_pins.py``
fails on any other, and ``pyproject.toml`` pins the same). Before allowing another
version, re-check each item against its source:

1. ``hypercorn.protocol.ws_stream.PerMessageDeflate``, the name ``WSStream`` looks up
   each time it accepts a WebSocket to offer its extensions, becomes
   :class:`_NoCompression`, which declines permessage-deflate: audio samples and
   protobuf hardly compress, compressing costs CPU on every message, and Node's
   WebSocket (undici) drops the connection (1006) on hypercorn's compressed frames.
   Hypercorn has no setting to turn the extension off. wsproto's own class is
   untouched (only its public ``Extension.accept`` is overridden).
2. ``hypercorn.trio.run.TCPServer``, the name ``worker_serve`` looks up for each
   accepted connection, becomes :class:`_TimedTCPServer`, a subclass whose
   ``protocol_send`` gives up on a client that reads nothing (hypercorn has no
   setting for it). It relies on ``TCPServer``'s attributes ``send_lock``,
   ``stream``, ``protocol`` and ``config``, and on ``protocol_send`` being the one
   path of ``RawData`` to the socket.
"""

from __future__ import annotations

import logging
import math

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol import ws_stream
from hypercorn.trio import run
from hypercorn.trio.tcp_server import TCPServer
from wsproto.extensions import PerMessageDeflate

__all__ = ["DISTRIBUTION", "WRITTEN_FOR", "WebConfig", "apply"]

logger = logging.getLogger("remotemedia.transport.web")  # the browser edge's lines, as before

DISTRIBUTION = "hypercorn"
"""The distribution this module patches."""
WRITTEN_FOR = ("0.17.0", "0.17.1", "0.17.2", "0.17.3", "0.18.0")
"""hypercorn versions whose source items 1-2 were checked against (0.18.0 tested with)."""


class WebConfig(Config):
    """Hypercorn's settings plus how long one write may wait for a client (item 2)."""

    send_timeout: float = math.inf


class _NoCompression(PerMessageDeflate):
    """permessage-deflate, always declined (item 1)."""

    def accept(self, offer: str) -> None:
        """Decline the client's offer."""
        return None


class _TimedTCPServer(TCPServer):
    """Hypercorn's connection, with writes that give up on a client that reads nothing.

    Hypercorn shields each write to the socket from cancellation (a frame written
    halfway would corrupt the connection), so a browser that stops reading held its
    connection task, and the session's writer with it, until the TCP connection
    died, long after the session had ended. Here a write still cannot be cancelled
    from outside, but it gives up after ``send_timeout`` (:class:`WebConfig`, the
    idle timeout) and closes the connection, the only safe end for a half-written
    frame (item 2).
    """

    async def protocol_send(self, event: Event) -> None:
        """Write ``event`` to the socket, or give up on the client after the timeout."""
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        timeout: float = getattr(self.config, "send_timeout", math.inf)  # a WebConfig's
        async with self.send_lock:
            try:
                with trio.CancelScope(shield=True), trio.move_on_after(timeout) as write:
                    await self.stream.send_all(event.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())
                return
            if write.cancelled_caught:
                logger.info(
                    "A WebSocket client read nothing for %g s; closing its connection.", timeout
                )
                await self.stream.aclose()
                await self.protocol.handle(Closed())


def apply() -> None:
    """Patch hypercorn for the WebSocket edge (items 1 and 2); calling it again does nothing."""
    setattr(ws_stream, "PerMessageDeflate", _NoCompression)  # noqa: B010 - not exported
    setattr(run, "TCPServer", _TimedTCPServer)  # noqa: B010 - hypercorn has no setting for it
