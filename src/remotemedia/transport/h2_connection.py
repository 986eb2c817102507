"""One HTTP/2 connection of the native gRPC transport, on Trio and the ``h2`` state machine.

``h2`` parses and builds frames (sans-IO); this module moves bytes and sets the
policy. A connection is a nursery: a reader (the socket, parsed into events, each
dispatched at once), a writer (everything ``h2`` has queued, in one ``send_all``),
a keepalive timer, and one task per call. What the policy is, and why:

1. **Batching.** The reader takes all the socket has (up to ``READ_SIZE``) per
   wake-up and gives it to ``h2`` a few frames at a time, letting other tasks run
   in between (one read must not stall the other connections); calls queue frames
   with ``h2`` and wake the writer, which runs after them in the same scheduler
   batch, so the frames of one tick go out in one write. Flow-control credit goes
   back in batches.
2. **Streams are isolated.** Connection credit is returned as data is taken off the
   socket; stream credit once the call's handler has taken its messages (a partial
   message, bounded by the message limit, is credited as it arrives). One stream
   that stops being read holds at most its own window, never its neighbours'.
3. **Bad peers are cut off.** A protocol error gets GOAWAY (PROTOCOL_ERROR); a
   connection must open its first stream within ``handshake_timeout``; more than
   ``max_connections`` get GOAWAY at once; a peer that pings (or changes settings)
   over and over while no data flows, or resets streams faster than ``RESETS_PER_S``,
   gets GOAWAY (ENHANCE_YOUR_CALM); one silent for ``keepalive_interval`` is pinged,
   and closed if it does not answer within ``keepalive_timeout``. What HTTP/2 itself
   allows and refuses is :mod:`~remotemedia.transport.http2`'s (shared with the
   grpclib transport). Whatever handling a peer's frames raises ends that
   connection, never the server; the lines a peer causes are logged at a bounded
   rate (:mod:`~remotemedia.log_throttle`).
4. **Closing is polite.** GOAWAY goes out with everything queued before it; then
   our side is shut down and the socket closed once the peer closes its side (or
   after ``LINGER``), so the peer reads the GOAWAY instead of a reset.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Awaitable, Callable, Sequence

import h2.connection
import h2.events
import h2.exceptions
import trio
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from remotemedia.config import Limits
from remotemedia.log_throttle import LogThrottle
from remotemedia.transport.http2 import (
    CONNECTION_WINDOW,
    IGNORED_EVENTS,
    LINGER,
    MAX_CONCURRENT_STREAMS,
    RESET_BURST,
    RESETS_PER_S,
    STREAM_WINDOW,
    FrameCutter,
    ServerH2Connection,
    TokenBucket,
    h2_config,
    opened_and_reset,
)
from remotemedia.transport.messages import (
    PREFIX,
    CallError,
    GrpcStatus,
    MessageReader,
    response_headers,
    trailers,
)

__all__ = ["Connection", "ServerStream", "peer_log"]

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 65535
"""HTTP/2's initial window, which the connection's starts from."""
MAX_HEADER_LIST_SIZE = 64 * 1024
"""Bytes of request headers (metadata) accepted."""
WRITE_HIGH_WATER = 256 * 1024
"""Bytes of responses a connection may have queued for its socket before senders wait."""
READ_SIZE = 256 * 1024
"""Bytes taken off the socket per wake-up at most."""
PARTING_LEAD = 0.05
"""Seconds between a peer's last stream and the GOAWAY at shutdown (see ``part``)."""
MIN_PING_INTERVAL = 5.0
"""Seconds between two pings (or settings changes) that count as normal when the
server has sent nothing in between; closer ones are strikes."""
MAX_PING_STRIKES = 2
"""Strikes a connection may have; one more gets GOAWAY (ENHANCE_YOUR_CALM)."""

CallHandler = Callable[["ServerStream"], Awaitable[None]]
LARGE_MESSAGE = 64 * 1024
"""Bytes from which a response is written without copying it behind its prefix."""


def _framed(message: bytes) -> tuple[memoryview, ...]:
    """A response message with its gRPC prefix, as the pieces to write in order.

    A large message is not copied to put the prefix in front of it: the prefix goes
    out with its first bytes, the rest is a view of the message itself.
    """
    prefix = PREFIX.pack(0, len(message))
    if len(message) < LARGE_MESSAGE:
        return (memoryview(prefix + message),)
    head = 16_384 - PREFIX.size  # one default-sized frame with the prefix
    return (memoryview(prefix + message[:head]), memoryview(message)[head:])


def peer_log() -> LogThrottle:
    """A throttle for the lines connections' peers cause (a server keeps one for all)."""
    return LogThrottle(logger)


class ServerStream:
    """One call's HTTP/2 stream, as its handler sees it.

    ``receive()`` gives the request messages in order (None at the client's
    half-close); ``send()`` writes a response message under flow control;
    ``end()`` writes the trailers. A stream the client reset, or whose connection
    was lost, has its call cancelled.
    """

    def __init__(self, connection: Connection, stream_id: int, headers: dict[bytes, bytes]):
        self.connection = connection
        self.id = stream_id
        self.headers = headers
        self.path = headers.get(b":path", b"").decode("latin-1")
        self.scope = trio.CancelScope()
        self.ended = False  # trailers or RST_STREAM sent: nothing more may be written
        self.headers_sent = False
        self.deliver: Callable[[bytes], bool] | None = None
        """Takes a request message at once if it can (True), from the reader's task.

        A handler sets it to skip the hop through its own task when the message can
        go straight on (its session's channel has room); messages it refuses, and
        every later one while any wait, go through :meth:`receive` in order.
        """
        self._reader = MessageReader(connection.limits.max_message_bytes)
        self._messages: collections.deque[bytes] = collections.deque()
        self._half_closed = False
        self._failure: CallError | None = None
        self._arrived = trio.lowlevel.ParkingLot()
        self._credit = trio.lowlevel.ParkingLot()
        self._queued = 0  # bytes of whole messages not taken yet
        self._uncredited = 0  # bytes received whose stream credit is not returned yet

    # ------------------------------------------------------------------ receiving

    async def receive(self) -> bytes | None:
        """The next request message (serialized), or None once the client half-closed.

        Raises:
            CallError: The request stream was malformed (INVALID_ARGUMENT,
                RESOURCE_EXHAUSTED, UNIMPLEMENTED).
        """
        while not self._messages:
            if self._failure is not None:
                raise self._failure
            if self._half_closed:
                return None
            await self._arrived.park()
        message = self._messages.popleft()
        self._queued -= PREFIX.size + len(message)
        self._maybe_credit()
        return message

    def _on_data(self, data: bytes, flow_controlled: int) -> None:
        self._uncredited += flow_controlled
        if self._failure is None and not self._half_closed:
            try:
                messages = self._reader.feed(data)
            except CallError as error:
                self._fail(error)
                messages = []
            deliver = self.deliver
            for message in messages:
                if deliver is not None and not self._messages and deliver(message):
                    continue  # taken at once: no task woken, nothing held
                self._queued += PREFIX.size + len(message)
                self._messages.append(message)
            if self._messages:
                self._arrived.unpark_all()
        self._maybe_credit()

    def _on_end(self) -> None:
        truncated = self._reader.truncation()
        if truncated is not None:
            self._fail(truncated)
        self._half_closed = True
        self._arrived.unpark_all()

    def _fail(self, error: CallError) -> None:
        if self._failure is None:
            self._failure = error
            self._arrived.unpark_all()

    def _maybe_credit(self) -> None:
        """Return stream credit in batches, unless taken messages are piling up.

        Credit for bytes already taken or not yet part of a whole message is
        returned once half a window has built up; what sits in whole messages the
        handler has not taken is held, so a stalled handler stops its client.
        """
        credit = self._uncredited - self._queued
        if credit >= STREAM_WINDOW // 2:
            self._uncredited -= credit
            self.connection._credit_stream(self.id, credit)

    # ------------------------------------------------------------------ sending

    async def send(self, message: bytes) -> None:
        """Write one response message (serialized), waiting for flow-control credit.

        Raises:
            trio.BrokenResourceError: The stream was reset or the connection lost.
        """
        connection = self.connection
        h2conn = connection.h2
        self._check_open()
        for data in _framed(message):
            while data:
                window = h2conn.local_flow_control_window(self.id)
                if window <= 0:
                    connection._waiting_credit.add(self)
                    try:
                        await self._credit.park()
                    finally:
                        connection._waiting_credit.discard(self)
                    self._check_open()
                    continue
                data = self._write(data, window)
        if connection.unsent > WRITE_HIGH_WATER:
            await connection.written()
            self._check_open()

    def send_now(self, message: bytes) -> bool:
        """Write one response message at once if nothing would have to wait for it.

        Returns:
            False (nothing written) if the stream's window cannot take all of it or
            the socket is behind; then :meth:`send` must.
        """
        connection = self.connection
        if self.ended or connection.closed or connection.unsent > WRITE_HIGH_WATER:
            return False
        size = PREFIX.size + len(message)
        if connection.h2.local_flow_control_window(self.id) < size:
            return False
        for piece in _framed(message):  # (a large message is not copied)
            self._write(piece, len(piece))
        return True

    def _write(self, data: memoryview, window: int) -> memoryview:
        """Queue as much of ``data`` as ``window`` allows with h2; the rest."""
        connection = self.connection
        h2conn = connection.h2
        if not self.headers_sent:
            self.headers_sent = True
            h2conn.send_headers(self.id, response_headers(connection.identity))
        frame_size = h2conn.max_outbound_frame_size
        while data and window > 0:
            size = min(window, frame_size, len(data))
            h2conn.send_data(self.id, data[:size])
            data = data[size:]
            window -= size
            connection.unsent += size
        connection.sent_since_ping = True
        connection.wake_writer()
        return data

    def _check_open(self) -> None:
        if self.ended or self.connection.closed:
            raise trio.BrokenResourceError("the stream was reset or its connection lost")

    def end(self, status: GrpcStatus, message: str = "") -> None:
        """Write the trailers (or a trailers-only response); later calls do nothing."""
        if self.ended or self.connection.closed:
            return
        self.ended = True
        try:
            self.connection.h2.send_headers(
                self.id,
                trailers(
                    status,
                    message,
                    trailers_only=not self.headers_sent,
                    extra=self.connection.identity,
                ),
                end_stream=True,
            )
            if status is not GrpcStatus.OK and not self._half_closed:
                # A failed call whose client is still sending: tell it to stop,
                # without an error (RFC 9113 8.1), as grpclib's server does.
                self.connection.h2.reset_stream(self.id, ErrorCodes.NO_ERROR)
        except h2.exceptions.StreamClosedError:
            return
        self.headers_sent = True
        self.connection.wake_writer()

    def reset(self, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        """End the stream with RST_STREAM now (no trailers: a response was half written)."""
        if self.ended or self.connection.closed:
            return
        self.ended = True
        try:
            self.connection.h2.reset_stream(self.id, code)
        except h2.exceptions.StreamClosedError:
            return
        self.connection.wake_writer()

    def release(self) -> None:
        """Drop what the stream still holds of its requests (its call is over).

        Something may keep the stream object itself for a while (a traceback, a
        metric); the messages it buffered must not be kept with it.
        """
        self.deliver = None
        self._messages.clear()
        self._queued = 0
        self._reader = MessageReader(self.connection.limits.max_message_bytes)

    def header(self, name: bytes) -> str | None:
        """A request header as text, or None if absent."""
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")


class Connection:
    """One client connection: its HTTP/2 state, its calls, and the rules above.

    Args:
        socket: The accepted connection.
        limits: The server's limits (message size, timeouts, connections).
        handler: Runs one call to its end (the gRPC layer, which writes the trailers).
        refuse: Say GOAWAY at once instead of serving (over ``max_connections``).
        identity: Headers every response carries (the server's name).
        log: Where the lines this connection's peer causes go, at a bounded rate
            (one per server: a peer can open many connections); default: its own.
    """

    def __init__(
        self,
        socket: trio.SocketStream,
        limits: Limits,
        handler: CallHandler,
        *,
        refuse: bool,
        identity: Sequence[tuple[bytes, bytes]] = (),
        log: LogThrottle | None = None,
    ) -> None:
        self.socket = socket
        self.log = log or peer_log()
        self.identity = identity
        self.limits = limits
        self.handler = handler
        self.refuse = refuse
        self.h2 = ServerH2Connection(
            h2_config(
                header_encoding=None,
                # Our own headers are built right (messages.py): checking them on
                # every response costs more than the rest of sending it.
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.closed = False  # the socket is gone or GOAWAY sent: nothing more is written
        self._closing = False  # GOAWAY queued: the writer ends with it, the reader drops
        self._linger = trio.CancelScope()
        self._handshake = trio.CancelScope()
        self.streams: dict[int, ServerStream] = {}
        self.sent_since_ping = True
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._drained = trio.lowlevel.ParkingLot()
        self.unsent = 0  # bytes of DATA queued and not yet taken by the socket
        self._want_write = False
        self._waiting_credit: set[ServerStream] = set()
        self._unreturned = 0
        self._strikes = 0
        self._last_ping = -math.inf
        self._resets = TokenBucket(RESETS_PER_S, RESET_BURST, trio.current_time())
        self._cutter = FrameCutter()
        self._last_heard = trio.current_time()
        self._ping_answered = trio.Event()
        self._parting: trio.Event | None = None
        self._nursery: trio.Nursery | None = None

    async def serve(self) -> None:
        """Serve the connection until the peer closes it, breaks it, or it is told to go."""
        h2conn = self.h2
        # Set before initiate_connection(), which announces them (no ACK round trip).
        h2conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            },
        )
        h2conn.initiate_connection()
        h2conn.increment_flow_control_window(CONNECTION_WINDOW - DEFAULT_WINDOW)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write_loop)
                self.wake_writer()
                if self.refuse:
                    self.log.warning(
                        "Refused a connection: %d are open, the limit (--max-connections).",
                        self.limits.max_connections,
                    )
                    self.go_away(ErrorCodes.REFUSED_STREAM)
                else:
                    nursery.start_soon(self._keepalive)
                with self._linger:
                    await self._read_loop()
                nursery.cancel_scope.cancel()  # the peer is gone: so are its calls
        finally:
            self.closed = True
            with trio.CancelScope(shield=True):
                await self.socket.aclose()

    # ------------------------------------------------------------------ reading

    async def _read_loop(self) -> None:
        if self._closing:
            await self._read()
            return
        with trio.move_on_after(self.limits.handshake_timeout) as self._handshake:
            await self._read()
        if self._handshake.cancelled_caught:
            self.log.info(
                "Closing a connection that sent no request within %g s (--handshake-timeout).",
                self.limits.handshake_timeout,
            )
            self.go_away(ErrorCodes.NO_ERROR)
            await self._read()

    async def _read(self) -> None:
        """Feed what arrives to ``h2`` until the peer closes (after GOAWAY: drop it)."""
        receive = self.socket.receive_some
        while True:
            try:
                data = await receive(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            if self._closing:
                continue  # GOAWAY was sent: the rest is read only to be dropped
            self._last_heard = trio.current_time()
            for index, piece in enumerate(self._cutter.cut(data)):
                if index:
                    # A read may hold thousands of frames (a rapid-reset burst is
                    # 7,000 streams in 200 KiB): the other connections go on between.
                    await trio.lowlevel.checkpoint()
                if not self._receive(piece):
                    break  # GOAWAY was sent: the rest is read only to be dropped
            if self._parting is not None:
                self._parting.set()  # part() checks the streams again

    def _receive(self, data: bytes) -> bool:
        """Parse ``data`` and act on its events; whatever goes wrong ends this connection only.

        Returns:
            False once the connection is told GOAWAY (what follows is not parsed).
        """
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            self.log.info("Closing a connection that broke the HTTP/2 protocol: %s", error)
            self.go_away(ErrorCodes.PROTOCOL_ERROR)
            return False
        try:
            # Streams the peer reset in the same read that opened them never start.
            dropped = opened_and_reset(events) if len(events) > 1 else ()
            for event in events:
                if self._closing:
                    break  # a connection told GOAWAY starts no more calls
                if not (
                    isinstance(event, h2.events.RequestReceived) and event.stream_id in dropped
                ):
                    self._dispatch(event)
        except Exception:
            self.log.exception("Closing a connection after an unexpected error in its frames.")
            self.go_away(ErrorCodes.INTERNAL_ERROR)
        self.wake_writer()
        return not self._closing

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, IGNORED_EVENTS):
            return
        if isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream._on_end()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self._strike_unless_data()
            for stream in list(self._waiting_credit):
                stream._credit.unpark_all()
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, h2.events.PingReceived):
            self._strike_unless_data()
        elif isinstance(event, h2.events.PingAckReceived):
            self._ping_answered.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            if not self.streams:  # the peer opens no more streams, and none is open
                self.go_away(ErrorCodes.NO_ERROR)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream._on_end()

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        self._handshake.deadline = math.inf
        stream = ServerStream(self, event.stream_id, dict(event.headers))
        self.streams[event.stream_id] = stream
        assert self._nursery is not None
        self._nursery.start_soon(self._run_call, stream)

    async def _run_call(self, stream: ServerStream) -> None:
        try:
            with stream.scope:
                await self.handler(stream)
        finally:
            del self.streams[stream.id]
            self._credit_stream(stream.id, stream._uncredited)  # (see _on_data)
            stream.ended = True  # (without trailers only if the peer reset it)
            stream.release()

    def _on_data(self, event: h2.events.DataReceived) -> None:
        size = event.flow_controlled_length
        self._unreturned += size
        if self._unreturned >= CONNECTION_WINDOW // 4:
            self.h2.increment_flow_control_window(self._unreturned)
            self._unreturned = 0
        stream = self.streams.get(event.stream_id)
        if stream is None:
            # Its call is over: what the client still sends is dropped, and credited
            # so that it can always end its side (some clients wait for credit even
            # to send an empty END_STREAM).
            self._credit_stream(event.stream_id, size)
            return
        stream._on_data(event.data, size)
        if event.stream_ended:
            stream._on_end()

    def _credit_stream(self, stream_id: int, size: int) -> None:
        # h2 forgets closed streams when new ones open, and then raises KeyError
        # here (not its own StreamClosedError): an ended stream's window no longer
        # matters either way.
        if size <= 0 or self.closed or stream_id not in self.h2.streams:
            return
        try:
            self.h2.increment_flow_control_window(size, stream_id=stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self.wake_writer()

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.ended = True
            stream.scope.cancel()
            stream._credit.unpark_all()
        if not self._resets.take(trio.current_time()) and not self._closing:
            self.log.warning("Closing a connection that reset streams over %g/s.", RESETS_PER_S)
            self.go_away(ErrorCodes.ENHANCE_YOUR_CALM, b"too_many_resets")

    def _strike_unless_data(self) -> None:
        """Count a ping or settings change that came too soon after the last, with no data."""
        now = trio.current_time()
        if now - self._last_ping < MIN_PING_INTERVAL and not self.sent_since_ping:
            self._strikes += 1
            if self._strikes > MAX_PING_STRIKES and not self._closing:
                self.log.warning("Closing a connection that pinged too often (ping flood).")
                self.go_away(ErrorCodes.ENHANCE_YOUR_CALM, b"too_many_pings")
        self._last_ping = now
        self.sent_since_ping = False

    # ------------------------------------------------------------------ writing

    def wake_writer(self) -> None:
        """Have the writer send what ``h2`` has queued (after this batch of tasks)."""
        if not self._want_write:
            self._want_write = True
            self._writer_lot.unpark()

    async def written(self) -> None:
        """Wait until the socket has taken what was queued (senders' backpressure)."""
        while self.unsent > WRITE_HIGH_WATER and not self.closed:
            await self._drained.park()

    async def _write_loop(self) -> None:
        """The only task that writes to the socket; after GOAWAY it writes the rest, then EOF."""
        send_all = self.socket.send_all
        while True:
            if not self._want_write:
                await self._writer_lot.park()
            self._want_write = False
            data = self.h2.data_to_send()
            try:
                if data:
                    await send_all(data)
                    self.unsent = 0 if not self._want_write else max(0, self.unsent - len(data))
                    self._drained.unpark_all()
                if self._closing and not self._want_write:
                    await self.socket.send_eof()
                    return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._lost()
                return

    def abort(self) -> None:
        """Drop the connection now, without GOAWAY: every call on it is cancelled."""
        self._lost()

    def _lost(self) -> None:
        """The socket cannot be written (or the peer went silent): every call on it is over."""
        self.closed = True
        self._drained.unpark_all()
        for stream in self.streams.values():
            stream.scope.cancel()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ keepalive

    async def _keepalive(self) -> None:
        interval = self.limits.keepalive_interval
        while True:
            await trio.sleep_until(self._last_heard + interval)
            if trio.current_time() < self._last_heard + interval:
                continue
            self._ping_answered = trio.Event()
            self.h2.ping(b"\0" * 8)
            self.wake_writer()
            with trio.move_on_after(self.limits.keepalive_timeout):
                await self._ping_answered.wait()
                continue
            self.log.info(
                "Closing a connection that did not answer a keepalive ping within %g s.",
                self.limits.keepalive_timeout,
            )
            self._lost()
            return

    # ------------------------------------------------------------------ closing

    async def part(self) -> None:
        """GOAWAY once the peer has closed its streams and had a moment to finish them.

        Some clients (grpclib's) end every stream they still hold when GOAWAY
        arrives: one that has its trailers but has not ended its own side yet, or
        has ended it but not yet left its ``async with``. So the GOAWAY waits (up
        to ``LINGER``) for the peer to end its streams, then for the answer to a
        PING (the peer has read everything), then ``PARTING_LEAD`` more for its
        tasks to run.
        """
        if self._closing:
            return
        with trio.move_on_after(LINGER):
            while self.h2.open_inbound_streams:
                self._parting = trio.Event()
                await self._parting.wait()
            self._ping_answered = trio.Event()
            self.h2.ping(b"partings")
            self.wake_writer()
            await self._ping_answered.wait()
            await trio.sleep(PARTING_LEAD)
        self.go_away()

    def go_away(self, error_code: ErrorCodes = ErrorCodes.NO_ERROR, data: bytes = b"") -> None:
        """Say GOAWAY after what is queued, shut our side, and close once the peer does.

        The reader drops what the peer still sends for up to ``LINGER`` seconds:
        closing a socket with unread data makes the kernel reset the connection, and
        the peer would never read the GOAWAY. Live calls are cancelled.
        """
        if self._closing:
            return
        self._closing = True
        self.closed = True
        if self.h2.state_machine.state is not h2.connection.ConnectionState.CLOSED:
            # (On a protocol error h2 has closed it already, and queued its own GOAWAY.)
            self.h2.close_connection(error_code=error_code, additional_data=data or None)
        for stream in self.streams.values():
            stream.scope.cancel()
        self._linger.deadline = min(self._linger.deadline, trio.current_time() + LINGER)
        self.wake_writer()
