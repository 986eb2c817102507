"""The gRPC server's HTTP/2 connections: what grpclib leaves to us.

grpclib (on asyncio, inside trio-asyncio) parses HTTP/2 with h2 and dispatches
calls; this module sets the policy for the connections themselves:

1. Streams are isolated: one stream's backpressure holds at most its own stream
   window, never the connection's (:class:`_IsolatingConnection`).
2. The HTTP/2 rules of :mod:`~remotemedia.transport.http2`, as on the native
   transport: requests' headers validated (grpclib turns that off), a stream over
   the limit refused alone, streams reset in the read that opened them never
   started, extension frames ignored, resets rate-limited, a read parsed a few
   frames at a time with the loop's other callbacks in between.
3. The connection rules of :mod:`~remotemedia.transport.connection_rules`, with the
   native transport's log lines: a connection gets GOAWAY and is closed for a
   protocol error, for frames that make grpclib (or anything else in
   ``data_received``) raise (a protocol callback ends its connection at most, never
   the server), for no request within ``handshake_timeout``, for being one over
   ``max_connections``, or for resets over the limit.
4. At shutdown every connection gets GOAWAY, then is closed (frames already
   written, such as the last trailers, still go out).

What of grpclib this takes that is not its public API (its connections' sockets and
h2 state, the protocol factory, the classes of the connections it builds) is reached
through :mod:`~remotemedia.transport.grpclib_internals`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from typing import Any

from grpclib.config import Configuration
from grpclib.encoding.base import CodecBase
from grpclib.protocol import AbstractHandler, Connection, H2Protocol
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import DataReceived, Event, RequestReceived, StreamReset
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from remotemedia.config import Limits
from remotemedia.log_throttle import LogThrottle
from remotemedia.transport import grpclib_internals
from remotemedia.transport.connection_rules import (
    ConnectionRules,
    over_connection_limit,
    queue_goaway,
)
from remotemedia.transport.grpclib_internals import ServerBase, h2_of, transport_of
from remotemedia.transport.http2 import (
    CONNECTION_WINDOW,
    IGNORED_EVENTS,
    LINGER,
    MAX_CONCURRENT_STREAMS,
    STREAM_WINDOW,
    FrameCutter,
    ServerH2Connection,
    h2_config,
    opened_and_reset,
)

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

    # Class attributes only: grpclib builds the object, then it is retyped to this
    # class (grpclib_internals.adopt); the dict is set by _ServerProtocol.
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
                h2_of(self).increment_flow_control_window(self._unreturned)
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
                for ended in pending.keys() - h2_of(self).streams.keys():
                    del pending[ended]
            return
        try:
            h2_of(self).increment_flow_control_window(unreturned, stream_id=stream_id)
        except ProtocolError:
            return  # the stream has ended: its window no longer matters
        self.flush()


class _ServerProtocol(H2Protocol):
    """grpclib's HTTP/2 protocol under the rules of this module."""

    server: GrpcServer
    _counted = False
    _gone = False
    _first_request: asyncio.TimerHandle | None = None
    _rules: ConnectionRules
    _cutter: FrameCutter
    _pieces: collections.deque[bytes]
    _paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        connection = grpclib_internals.adopt(self, _IsolatingConnection, ServerH2Connection)
        connection._unreturned_by_stream = {}
        h2_connection = h2_of(connection)
        h2_connection.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS})
        self.connection.flush()
        loop = asyncio.get_running_loop()
        server = self.server
        self._rules = ConnectionRules(server.limits, server.log, loop.time())
        self._cutter = FrameCutter()
        self._pieces = collections.deque()
        refuse = over_connection_limit(server.open_connections, server.limits)
        server.open_connections += 1
        self._counted = True
        if refuse:
            self.go_away(self._rules.refused().error_code)
            return
        self._first_request = loop.call_later(server.limits.handshake_timeout, self._no_request)

    def data_received(self, data: bytes) -> None:
        # grpclib's own, except for rules 2 and 3: grpclib would fail only the streams
        # of a protocol error and leave the socket open, and an event it has no
        # handler for (an extension frame) raises out of here into the server.
        if self._gone:
            return  # GOAWAY was sent: the rest is read only to be dropped
        self._pieces.extend(self._cutter.cut(data))
        self._feed()

    def _feed(self) -> None:
        """Give ``h2`` the next few frames; the rest after the loop's other callbacks.

        Reading pauses meanwhile, so the pieces of one read stay in order and the
        other connections run between them (rule 2: a read may hold thousands of
        frames).
        """
        if self._gone or not self._pieces:
            self._pieces.clear()
            return
        try:
            self._receive(self._pieces.popleft())
        except Exception:
            self._end(self._rules.frames_failed().error_code)
        transport = transport_of(self.connection)
        if transport is None:  # grpclib has closed the connection
            self._pieces.clear()
            return
        if self._pieces and not self._gone:
            if not self._paused:
                self._paused = True
                transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._feed)
        elif self._paused:
            self._paused = False
            if not transport.is_closing():
                transport.resume_reading()

    def _receive(self, data: bytes) -> None:
        try:
            events = self.connection.feed(data)
        except ProtocolError as error:
            self._end(self._rules.protocol_broken(error).error_code)
            return
        self.connection.flush()
        # Streams the peer reset in the same read that opened them never start.
        dropped = opened_and_reset(events) if len(events) > 1 else ()
        for event in events:
            if self._gone:
                break  # a connection told GOAWAY starts no more calls
            if isinstance(event, IGNORED_EVENTS):
                continue
            if isinstance(event, RequestReceived) and event.stream_id in dropped:
                continue
            if isinstance(event, StreamReset):
                cutoff = self._rules.reset(asyncio.get_running_loop().time())
                if cutoff is not None:
                    self._end(cutoff.error_code)
                    break
            self.processor.process(event)
        self.connection.flush()
        if self._first_request is not None and h2_of(self.connection).open_inbound_streams:
            self._first_request.cancel()
            self._first_request = None

    def _end(self, error_code: ErrorCodes) -> None:
        """GOAWAY, and end every call on the connection now (the socket closes later).

        What grpclib's ``processor.close()`` does, but without closing the socket at
        once: the GOAWAY would be lost.
        """
        self.go_away(error_code)
        self.processor.handler.close()
        for stream in list(self.processor.streams.values()):
            grpclib_internals.terminate(stream, "Connection closed")

    def connection_lost(self, exc: BaseException | None) -> None:
        self._gone = True  # (pieces of its last read are dropped)
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
        transport = transport_of(self.connection)
        if self._gone or transport is None or transport.is_closing():
            return
        self._gone = True
        queue_goaway(h2_of(self.connection), error_code)
        self.connection.flush()
        if linger and transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER, transport.close)
        else:
            transport.close()

    def _no_request(self) -> None:
        self._first_request = None
        self.go_away(self._rules.no_request().error_code)


class GrpcServer(ServerBase):
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
            # grpclib's, with requests' headers validated (rule 2).
            h2_config=h2_config(
                header_encoding="ascii",
                validate_outbound_headers=False,
                normalize_inbound_headers=False,
                normalize_outbound_headers=False,
            ),
        )
        self.limits = limits
        self.log = LogThrottle(logger)
        """Where the lines peers cause go, at a bounded rate."""
        self.open_connections = 0
        self._protocols: weakref.WeakSet[_ServerProtocol] = weakref.WeakSet()

    def make_protocol(
        self, handler: AbstractHandler, config: Configuration, h2_config: H2Configuration
    ) -> H2Protocol:
        """The protocol of one accepted connection, under this module's rules."""
        protocol = _ServerProtocol(handler, config, h2_config)
        protocol.server = self
        self._protocols.add(protocol)
        return protocol

    @property
    def port(self) -> int:
        """The port the server listens on."""
        listener: Any = self.listener  # asyncio's Server, which has .sockets
        assert listener is not None, "start() the server first"
        port: int = listener.sockets[0].getsockname()[1]
        return port

    def contain_connection_errors(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        """The loop's exception handler: a connection's failure is logged, not raised.

        trio-asyncio's default handler raises every error an asyncio callback leaves
        into the loop's nursery, which ends the server. An error of a protocol or
        transport callback has already cost its connection (asyncio closes it); it
        is logged here, at a bounded rate. Anything else goes to the default handler.
        """
        if "protocol" not in context and "transport" not in context:
            loop.default_exception_handler(context)
            return
        self.log.warning(
            "A connection failed and was closed: %s (%r).",
            context.get("message"),
            context.get("exception"),
        )

    def stop_listening(self) -> None:
        """Accept no more connections (live ones go on)."""
        if self.listener is not None:
            self.listener.close()

    def close_connections(self) -> None:
        """Say GOAWAY on every connection and close it now (the server is stopping)."""
        for protocol in list(self._protocols):
            protocol.go_away(linger=False)
