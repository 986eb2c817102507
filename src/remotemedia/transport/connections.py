"""The gRPC server's HTTP/2 connections: what grpclib leaves to us.

grpclib (on asyncio, inside trio-asyncio) parses HTTP/2 with h2 and dispatches
calls; this module sets the policy for the connections themselves:

1. Streams are isolated: one stream's backpressure holds at most its own stream
   window, never the connection's (:class:`_IsolatingConnection`).
2. A connection that breaks the protocol gets GOAWAY and is closed.
3. A connection must send its first request within ``handshake_timeout``.
4. At most ``max_connections`` are open; one more gets GOAWAY and is closed.
5. At shutdown every connection gets GOAWAY, then is closed (frames already
   written, such as the last trailers, still go out).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from grpclib.config import Configuration
from grpclib.encoding.base import CodecBase
from grpclib.protocol import Connection, H2Protocol
from grpclib.server import Server
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from h2.events import DataReceived, Event
from h2.exceptions import ProtocolError

from remotemedia.config import Limits

# The same windows and linger as the native transport's, so both behave alike.
from remotemedia.transport.h2_connection import CONNECTION_WINDOW, LINGER, STREAM_WINDOW

__all__ = ["GrpcServer"]

logger = logging.getLogger(__name__)


class _IsolatingConnection(Connection):
    """grpclib's connection, with each stream's flow control isolated from the others.

    grpclib returns flow-control credit for the stream and the connection together,
    when a handler reads a message, so one handler that stops reading lets its
    stream's unread data fill the connection window and every other call on the
    connection stalls. Here connection credit is returned as soon as data is taken
    off the socket (it then waits in its stream's buffer, bounded by the stream
    window), and stream credit when the handler reads it. Both go out in batches.
    """

    _unreturned = 0
    _unreturned_by_stream: dict[int, int]

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = super().feed(data)
        received = sum(
            event.flow_controlled_length for event in events if isinstance(event, DataReceived)
        )
        if received:
            self._unreturned += received
            if self._unreturned >= CONNECTION_WINDOW // 4:
                self._connection.increment_flow_control_window(self._unreturned)
                self._unreturned = 0
        return events

    def ack(self, stream_id: int, size: int) -> None:
        if not size:
            return
        pending = self._unreturned_by_stream
        unreturned = pending.pop(stream_id, 0) + size
        if unreturned < STREAM_WINDOW // 2:
            # A handler waiting for data has read everything it was sent, so a
            # client out of window always has at least this much to get back.
            pending[stream_id] = unreturned
            if len(pending) > 64:  # forget streams that ended with credit unreturned
                for ended in pending.keys() - self._connection.streams.keys():
                    del pending[ended]
            return
        try:
            self._connection.increment_flow_control_window(unreturned, stream_id=stream_id)
        except ProtocolError:
            return  # the stream has ended: its window no longer matters
        self.flush()


class _ServerProtocol(H2Protocol):
    """grpclib's HTTP/2 protocol under the rules of this module."""

    server: GrpcServer
    _counted = False
    _gone = False
    _first_request: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # grpclib builds its Connection inline; the subclass adds behaviour only.
        self.connection.__class__ = _IsolatingConnection
        self.connection._unreturned_by_stream = {}  # type: ignore[attr-defined]
        server = self.server
        server.open_connections += 1
        self._counted = True
        if server.open_connections > server.limits.max_connections:
            logger.warning(
                "Refused a connection: %d are open, the limit (--max-connections).",
                server.limits.max_connections,
            )
            self.go_away(ErrorCodes.REFUSED_STREAM)
            return
        self._first_request = asyncio.get_running_loop().call_later(
            server.limits.handshake_timeout, self._no_request
        )

    def data_received(self, data: bytes) -> None:
        # grpclib's own, except that a protocol error ends the connection: grpclib
        # would only fail its streams and leave the socket open.
        if self._gone:
            return  # GOAWAY was sent: the rest is read only to be dropped
        try:
            events = self.connection.feed(data)
        except ProtocolError as error:
            logger.info("Closing a connection that broke the HTTP/2 protocol: %s", error)
            self.go_away(ErrorCodes.PROTOCOL_ERROR)
            # What grpclib's processor.close() does, but without closing the socket
            # at once (the GOAWAY would be lost): end the calls now, the socket later.
            self.processor.handler.close()
            for stream in list(self.processor.streams.values()):
                stream.__terminated__("Protocol error")
            return
        self.connection.flush()
        for event in events:
            self.processor.process(event)
        self.connection.flush()
        if self._first_request is not None and self.connection._connection.open_inbound_streams:
            self._first_request.cancel()
            self._first_request = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self.server.open_connections -= 1
            self._counted = False
        if self._first_request is not None:
            self._first_request.cancel()
            self._first_request = None
        super().connection_lost(exc)

    def go_away(self, error_code: ErrorCodes = ErrorCodes.NO_ERROR, *, linger: bool = True) -> None:
        """Send GOAWAY and close the connection (what is already written still goes out).

        With ``linger``, our side is shut down first and the socket closed only once
        the client has closed its side (or after ``LINGER`` seconds), ignoring what it
        still sends: closing a socket with unread data makes the kernel reset the
        connection, and the client would never read the GOAWAY.
        """
        transport = getattr(self.connection, "_transport", None)
        if self._gone or transport is None or transport.is_closing():
            return
        self._gone = True
        h2_connection = self.connection._connection
        if h2_connection.state_machine.state is not ConnectionState.CLOSED:
            # (On a protocol error h2 has closed it already, and queued its own GOAWAY.)
            h2_connection.close_connection(error_code=error_code)
        self.connection.flush()
        if linger and transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER, transport.close)
        else:
            transport.close()

    def _no_request(self) -> None:
        self._first_request = None
        logger.info(
            "Closing a connection that sent no request within %g s (--handshake-timeout).",
            self.server.limits.handshake_timeout,
        )
        self.go_away(ErrorCodes.NO_ERROR)


class GrpcServer(Server):
    """grpclib's Server with this module's connection rules, and a clean shutdown.

    grpclib's ``close()`` stops listening and cancels handlers but leaves accepted
    connections open (and ``wait_closed`` waits on them on Python >= 3.12):
    :meth:`close_connections` ends them.

    Args:
        handlers: The services.
        limits: ``max_connections`` and ``handshake_timeout`` apply.
        codec: How messages are encoded and decoded.
    """

    def __init__(self, handlers: list[Any], limits: Limits, *, codec: CodecBase) -> None:
        super().__init__(
            handlers,
            codec=codec,
            config=Configuration(
                http2_connection_window_size=CONNECTION_WINDOW,
                http2_stream_window_size=STREAM_WINDOW,
            ),
        )
        self.limits = limits
        self.open_connections = 0
        self._protocols: weakref.WeakSet[_ServerProtocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        # grpclib builds its protocol inline; the subclass adds behaviour only.
        protocol.__class__ = _ServerProtocol
        assert isinstance(protocol, _ServerProtocol)
        protocol.server = self
        self._protocols.add(protocol)
        return protocol

    @property
    def port(self) -> int:
        """The port the server listens on."""
        listener: Any = self._server
        assert listener is not None, "start() the server first"
        port: int = listener.sockets[0].getsockname()[1]
        return port

    def stop_listening(self) -> None:
        """Accept no more connections (live ones go on)."""
        if self._server is not None:
            self._server.close()

    def close_connections(self) -> None:
        """Say GOAWAY on every connection and close it now (the server is stopping)."""
        for protocol in list(self._protocols):
            protocol.go_away(linger=False)
