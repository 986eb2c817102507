"""When a gRPC connection is cut off, on either transport, and the line each reason logs.

The native transport (:mod:`~remotemedia.transport.h2_connection`) and the grpclib
one (:mod:`~remotemedia.transport.connections`) end a connection for the same
reasons, with the same GOAWAY and the same log line; both take them from here. What
HTTP/2 itself allows is :mod:`~remotemedia.transport.http2`'s. Sans-IO: the
transports own the sockets, clocks and timers, and pass the time in; this module
decides, and logs through the throttle it is given (one per server: a peer can open
many connections, and must not set the log's rate).

1. **At most ``max_connections`` are open.** One accepted while that many are open
   gets GOAWAY (REFUSED_STREAM) at once (:func:`over_connection_limit`,
   :meth:`ConnectionRules.refused`).
2. **A connection sends its first request within ``handshake_timeout``**, or gets
   GOAWAY (NO_ERROR) (:meth:`ConnectionRules.no_request`).
3. **A protocol error** gets GOAWAY (PROTOCOL_ERROR), from ``h2`` itself
   (:meth:`ConnectionRules.protocol_broken`).
4. **Whatever handling a peer's frames raises ends that connection, never the
   server**: GOAWAY (INTERNAL_ERROR), the traceback logged
   (:meth:`ConnectionRules.frames_failed`).
5. **Resets are rate-limited**: more than ``RESETS_PER_S`` sustained (``RESET_BURST``
   at once) gets GOAWAY (ENHANCE_YOUR_CALM), the "rapid reset" attack
   (:meth:`ConnectionRules.reset`).
6. **Pings are rate-limited**: a ping (or settings change) less than
   ``MIN_PING_INTERVAL`` after the last one, with no data sent in between, is a
   strike; one more than ``MAX_PING_STRIKES`` gets GOAWAY (ENHANCE_YOUR_CALM)
   (:meth:`ConnectionRules.ping`). The native transport keeps this rule; grpclib's
   answers pings itself.
7. **GOAWAY goes out once, after what is queued** (:func:`queue_goaway`); then the
   transport shuts its side and closes once the peer has closed its own, or after
   ``LINGER`` seconds, dropping what the peer still sends: a socket closed with
   unread data is reset by the kernel, and the peer would never read the GOAWAY.
"""

from __future__ import annotations

import logging
import math

import attrs
import h2.connection
from h2.errors import ErrorCodes

from remotemedia.config import Limits
from remotemedia.log_throttle import LogThrottle
from remotemedia.transport.http2 import RESET_BURST, RESETS_PER_S, TokenBucket

__all__ = [
    "FRAMES_FAILED",
    "MAX_PING_STRIKES",
    "MIN_PING_INTERVAL",
    "NO_REQUEST",
    "OVER_MAX_CONNECTIONS",
    "PING_FLOOD",
    "PROTOCOL_BROKEN",
    "RESET_FLOOD",
    "ConnectionRules",
    "Cutoff",
    "over_connection_limit",
    "queue_goaway",
]

MIN_PING_INTERVAL = 5.0
"""Seconds between two pings (or settings changes) that count as normal when the
server has sent nothing in between; closer ones are strikes (rule 6)."""
MAX_PING_STRIKES = 2
"""Strikes a connection may have; one more gets GOAWAY (ENHANCE_YOUR_CALM)."""


@attrs.frozen
class Cutoff:
    """A reason to end a connection: the GOAWAY that says so, and the line it logs.

    Attributes:
        error_code: The GOAWAY's error code.
        line: The log line's template (its arguments are the limit or the error,
            never what the peer sent: :class:`~remotemedia.log_throttle.LogThrottle`
            tells lines apart by template).
        level: The log line's level.
        debug_data: The GOAWAY's debug data (the native transport sends it).
        traceback: Whether the line carries the exception being handled.
    """

    error_code: ErrorCodes
    line: str
    level: int = logging.INFO
    debug_data: bytes = b""
    traceback: bool = False


OVER_MAX_CONNECTIONS = Cutoff(
    ErrorCodes.REFUSED_STREAM,
    "Refused a connection: %d are open, the limit (--max-connections).",
    logging.WARNING,
)
"""Rule 1."""
NO_REQUEST = Cutoff(
    ErrorCodes.NO_ERROR,
    "Closing a connection that sent no request within %g s (--handshake-timeout).",
)
"""Rule 2."""
PROTOCOL_BROKEN = Cutoff(
    ErrorCodes.PROTOCOL_ERROR, "Closing a connection that broke the HTTP/2 protocol: %s"
)
"""Rule 3."""
FRAMES_FAILED = Cutoff(
    ErrorCodes.INTERNAL_ERROR,
    "Closing a connection after an unexpected error in its frames.",
    logging.ERROR,
    traceback=True,
)
"""Rule 4."""
RESET_FLOOD = Cutoff(
    ErrorCodes.ENHANCE_YOUR_CALM,
    "Closing a connection that reset streams over %g/s.",
    logging.WARNING,
    b"too_many_resets",
)
"""Rule 5."""
PING_FLOOD = Cutoff(
    ErrorCodes.ENHANCE_YOUR_CALM,
    "Closing a connection that pinged too often (ping flood).",
    logging.WARNING,
    b"too_many_pings",
)
"""Rule 6."""


def over_connection_limit(open_connections: int, limits: Limits) -> bool:
    """Whether a connection accepted while ``open_connections`` others are open is refused.

    Rule 1; then :meth:`ConnectionRules.refused` says why.
    """
    return open_connections >= limits.max_connections


def queue_goaway(
    connection: h2.connection.H2Connection, error_code: ErrorCodes, debug_data: bytes = b""
) -> None:
    """Queue GOAWAY with ``h2`` after what it has queued already (rule 7).

    On a protocol error ``h2`` has closed the connection itself and queued its own
    GOAWAY: then nothing more is queued.
    """
    if connection.state_machine.state is not h2.connection.ConnectionState.CLOSED:
        connection.close_connection(error_code=error_code, additional_data=debug_data or None)


class ConnectionRules:
    """One connection under this module's rules: each method that ends it logs why.

    Methods that return a :class:`Cutoff` have logged its line; the transport sends
    the GOAWAY. Those returning ``Cutoff | None`` count an event and return None
    while the connection is within its limits.

    Args:
        limits: The server's limits (``max_connections``, ``handshake_timeout``).
        log: Where the lines go, at a bounded rate.
        now: The transport's clock, in seconds (its later calls use the same clock).
    """

    def __init__(self, limits: Limits, log: LogThrottle, now: float) -> None:
        self.limits = limits
        self.log = log
        self._resets = TokenBucket(RESETS_PER_S, RESET_BURST, now)
        self._strikes = 0
        self._last_ping = -math.inf

    def refused(self) -> Cutoff:
        """The connection is over ``max_connections`` (rule 1)."""
        return self._cut(OVER_MAX_CONNECTIONS, self.limits.max_connections)

    def no_request(self) -> Cutoff:
        """The connection sent no request within ``handshake_timeout`` (rule 2)."""
        return self._cut(NO_REQUEST, self.limits.handshake_timeout)

    def protocol_broken(self, error: Exception) -> Cutoff:
        """``h2`` refused the peer's frames with ``error`` (rule 3)."""
        return self._cut(PROTOCOL_BROKEN, error)

    def frames_failed(self) -> Cutoff:
        """Handling the peer's frames raised (rule 4); call it while handling the exception."""
        return self._cut(FRAMES_FAILED)

    def reset(self, now: float) -> Cutoff | None:
        """The peer reset a stream at ``now`` (rule 5)."""
        if self._resets.take(now):
            return None
        return self._cut(RESET_FLOOD, RESETS_PER_S)

    def ping(self, now: float, data_sent: bool) -> Cutoff | None:
        """The peer pinged (or changed settings) at ``now`` (rule 6).

        Args:
            now: The transport's clock.
            data_sent: Whether the server has sent data since the peer's last ping.
        """
        cutoff = None
        if now - self._last_ping < MIN_PING_INTERVAL and not data_sent:
            self._strikes += 1
            if self._strikes > MAX_PING_STRIKES:
                cutoff = self._cut(PING_FLOOD)
        self._last_ping = now
        return cutoff

    def _cut(self, cutoff: Cutoff, *args: object) -> Cutoff:
        self.log.log(cutoff.level, cutoff.line, *args, exc_info=cutoff.traceback)
        return cutoff
