"""h2's internals, reached from this module only: one stream over the limit refused alone.

Rule 3 of :mod:`~remotemedia.transport.http2` needs h2 to refuse a stream, not the
connection, and h2 has no option for it. Both gRPC transports build their h2
connections as :class:`ServerH2Connection` (grpclib's is retyped to it, see
:mod:`~remotemedia.transport.grpclib_internals`). Nothing happens at import. The code
is written for the h2 versions in :data:`WRITTEN_FOR` (``tests/unit/test_third_party_pins.py``
fails on any other, and ``pyproject.toml`` pins the same). Before allowing another
version, re-check against its source:

1. ``H2Connection._receive_frame(frame)`` handles one parsed frame and returns its
   events; ``receive_data`` calls it for every frame, and it is overridden.
2. ``_receive_headers_frame`` refuses a new stream (``TooManyStreamsError``, a
   connection error) by reading the public ``open_inbound_streams`` property, which
   is overridden to read 0 while a refused stream's HEADERS is taken in.
3. ``highest_inbound_stream_id`` is still the highest stream the peer opened.
"""

from __future__ import annotations

import h2.connection
import h2.events
from h2.errors import ErrorCodes
from hyperframe.frame import Frame, HeadersFrame

__all__ = ["DISTRIBUTION", "WRITTEN_FOR", "ServerH2Connection"]

DISTRIBUTION = "h2"
"""The distribution this module reaches into."""
WRITTEN_FOR = ("4.1.0", "4.2.0", "4.3.0", "4.4.0", "4.4.1")
"""h2 versions whose source items 1-3 were checked against (4.4.1 tested with)."""


class ServerH2Connection(h2.connection.H2Connection):
    """``h2``'s connection, refusing a stream over its limit instead of the connection.

    ``h2`` raises ``TooManyStreamsError`` (a connection error) for a HEADERS frame
    that opens one stream more than ``MAX_CONCURRENT_STREAMS``. Here that stream is
    opened, so its header block still updates the HPACK state (the connection's
    next requests depend on it), then reset with REFUSED_STREAM at once, and its
    events are dropped (rule 3).
    """

    _over_limit = False

    @property
    def open_inbound_streams(self) -> int:
        """Open streams the peer started (0 while a refused stream is let in)."""
        count: int = super().open_inbound_streams
        return 0 if self._over_limit else count

    def _receive_frame(self, frame: Frame) -> list[h2.events.Event]:
        if not (isinstance(frame, HeadersFrame) and self._refuses(frame.stream_id)):
            events: list[h2.events.Event] = super()._receive_frame(frame)
            return events
        self._over_limit = True
        try:
            events = super()._receive_frame(frame)
        finally:
            self._over_limit = False
        self.reset_stream(frame.stream_id, ErrorCodes.REFUSED_STREAM)
        return [event for event in events if getattr(event, "stream_id", 0) != frame.stream_id]

    def _refuses(self, stream_id: int) -> bool:
        """Whether a HEADERS frame on ``stream_id`` opens a stream over the limit."""
        return (
            stream_id > self.highest_inbound_stream_id
            and self.open_inbound_streams >= self.local_settings.max_concurrent_streams
        )
