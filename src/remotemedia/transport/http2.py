"""The HTTP/2 rules both gRPC transports keep, whatever parses the frames for them.

The native transport (:mod:`~remotemedia.transport.h2_connection`) and the grpclib
one (:mod:`~remotemedia.transport.connections`) both parse HTTP/2 with ``h2``; what a
peer may do to them is decided here, once:

1. **Windows.** The same stream and connection windows, so both behave alike under
   backpressure.
2. **Requests are checked.** ``h2`` validates every request's headers (pseudo-headers
   present, once, known and first; lowercase names; no connection-specific
   headers): a malformed request ends the connection with PROTOCOL_ERROR before any
   handler runs (:func:`h2_config`).
3. **One stream too many is refused, not the connection.** A stream over
   ``MAX_CONCURRENT_STREAMS`` gets RST_STREAM (REFUSED_STREAM), which a client may
   retry (RFC 9113 §5.1.2); the others go on (:class:`ServerH2Connection`, which
   overrides h2's internals from :mod:`~remotemedia.transport.h2_internals`).
4. **A stream reset in the read that opened it costs nothing.** Its request is
   dropped before any call starts (:func:`opened_and_reset`).
5. **Frames and events nobody asked for are ignored.** Extension frames are legal
   (RFC 9113 §5.5): ``UnknownFrameReceived`` and the like are dropped
   (:data:`IGNORED_EVENTS`), never an error.
6. **Resets are rate-limited**: more than ``RESETS_PER_S`` sustained (``RESET_BURST``
   at once) gets GOAWAY (ENHANCE_YOUR_CALM), the "rapid reset" attack.
7. **One read is parsed a few frames at a time.** ``h2`` takes about 0.2 ms per
   request it parses, and one 256 KiB read can hold 9,000 of them: the reader hands
   it ``FRAMES_PER_FEED`` frames at a time (:class:`FrameCutter`) and lets the other
   connections run in between, and stops as soon as the connection is told GOAWAY.
   DATA frames, about a tenth of that cost each, count ``DATA_SHARE`` of a frame, so
   a read of audio chunks (a few hundred small DATA frames) is parsed in one go.
8. **Closing is polite**: after GOAWAY the peer gets ``LINGER`` seconds to close its
   side, so it reads the GOAWAY instead of a reset.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import h2.config
import h2.events

from remotemedia.transport.h2_internals import ServerH2Connection

__all__ = [
    "CONNECTION_WINDOW",
    "FRAMES_PER_FEED",
    "IGNORED_EVENTS",
    "LINGER",
    "MAX_CONCURRENT_STREAMS",
    "RESETS_PER_S",
    "RESET_BURST",
    "STREAM_WINDOW",
    "FrameCutter",
    "ServerH2Connection",
    "TokenBucket",
    "h2_config",
    "opened_and_reset",
]

STREAM_WINDOW = 256 * 1024
"""Bytes a client may send on one stream ahead of what its handler has taken."""
CONNECTION_WINDOW = 8 * 1024 * 1024
"""Bytes a client may have in flight on one connection, across all its streams."""
MAX_CONCURRENT_STREAMS = 1000
"""Streams one connection may have open (a balancer multiplexes many sessions)."""
LINGER = 2.0
"""Seconds a connection told GOAWAY is kept (reading and dropping) for its peer to close."""
RESETS_PER_S = 500.0
"""Streams a peer may reset per second, sustained (the "rapid reset" attack)."""
RESET_BURST = 1000.0
"""Streams a peer may reset in a burst."""
FRAMES_PER_FEED = 64
"""Frames given to ``h2`` at a time (rule 7): a few ms of parsing at most."""
DATA_SHARE = 8
"""DATA frames that count as one frame of ``FRAMES_PER_FEED`` (rule 7)."""
PREFACE_SIZE = 24
"""Bytes of the client's connection preface (``PRI * HTTP/2.0...``), before any frame."""
FRAME_HEADER_SIZE = 9
_DATA = 0x0

IGNORED_EVENTS: tuple[type[h2.events.Event], ...] = (
    h2.events.UnknownFrameReceived,
    h2.events.AlternativeServiceAvailable,
    h2.events.PriorityUpdated,
    h2.events.SettingsAcknowledged,
)
"""Events a server has nothing to do about (rule 5)."""


def h2_config(**options: Any) -> h2.config.H2Configuration:
    """A server-side ``h2`` configuration that validates every request (rule 2).

    ``options`` set the rest (grpclib, for one, turns validation off for speed:
    then a duplicated ``:path`` or a ``connection`` header reaches a handler).
    """
    return h2.config.H2Configuration(
        client_side=False,
        validate_inbound_headers=True,
        **options,
    )


def opened_and_reset(events: Iterable[h2.events.Event]) -> set[int]:
    """Streams both opened and reset by the peer among ``events`` (one read's; rule 4)."""
    opened: set[int] = set()
    gone: set[int] = set()
    for event in events:
        if isinstance(event, h2.events.RequestReceived):
            opened.add(event.stream_id)
        elif isinstance(event, h2.events.StreamReset) and event.stream_id in opened:
            gone.add(event.stream_id)
    return gone


@attrs.define
class TokenBucket:
    """At most ``rate`` events per second sustained, ``burst`` at once (rule 6).

    Attributes:
        rate: Tokens added per second.
        burst: Tokens the bucket holds at most (it starts full).
        at: When ``tokens`` was last brought up to date (the clock's seconds).
        tokens: Tokens available now.
    """

    rate: float
    burst: float
    at: float
    tokens: float = attrs.field()

    @tokens.default
    def _full(self) -> float:
        return self.burst

    def take(self, now: float) -> bool:
        """Take one token at time ``now``: False (nothing taken) if none is left."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class FrameCutter:
    """Cuts what a client sends into pieces of at most ``frames`` whole frames (rule 7).

    Only the frames' 9-byte headers are read, for their lengths and types: parsing
    is ``h2``'s. A frame may span reads; the preface counts as one frame, and
    ``DATA_SHARE`` DATA frames as one. Sans-IO.

    Args:
        frames: Frames a piece may end at most (its last one may have begun in an
            earlier piece).
    """

    def __init__(self, frames: int = FRAMES_PER_FEED) -> None:
        self.limit = frames * DATA_SHARE  # in DATA frames' worth
        self._left = PREFACE_SIZE  # bytes of the current frame still to come
        self._cost = DATA_SHARE  # of the current frame
        self._header = b""  # the next frame's header, while it is incomplete

    def cut(self, data: bytes) -> list[bytes]:
        """``data`` in pieces, in order, each ending at most ``frames`` frames."""
        pieces: list[bytes] = []
        start = position = cost = 0
        size = len(data)
        while position < size:
            if self._left:
                step = min(self._left, size - position)
                position += step
                self._left -= step
                if self._left:
                    break
            else:
                need = FRAME_HEADER_SIZE - len(self._header)
                self._header += data[position : position + need]
                position += min(need, size - position)
                if len(self._header) < FRAME_HEADER_SIZE:
                    break
                self._left = int.from_bytes(self._header[:3], "big")
                self._cost = 1 if self._header[3] == _DATA else DATA_SHARE
                self._header = b""
                if self._left:
                    continue
            cost += self._cost
            if cost >= self.limit:
                pieces.append(data[start:position])
                start, cost = position, 0
        if start < size:
            pieces.append(data[start:] if start else data)
        return pieces
