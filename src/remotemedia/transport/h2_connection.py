"""One HTTP/2 connection of the native gRPC transport, on Trio and the ``h2`` state machine.

``h2`` parses and builds frames (sans-IO); this module moves bytes and applies the
policy. A connection is a nursery: a reader (the socket, parsed into events, each
dispatched at once), a writer (everything ``h2`` has queued, in one ``send_all``),
a keepalive timer, and one task per call, whose stream is a
:class:`~remotemedia.transport.h2_stream.ServerStream`. What the policy is, and why:

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
3. **Bad peers are cut off**, under the rules both transports keep
   (:mod:`~remotemedia.transport.connection_rules`: connection limit, handshake
   timeout, protocol errors, reset and ping floods, each with its GOAWAY and its
   log line); what HTTP/2 itself allows and refuses is
   :mod:`~remotemedia.transport.http2`'s. A peer silent for ``keepalive_interval``
   is pinged, and dropped if it does not answer within ``keepalive_timeout``.
   Whatever handling a peer's frames raises ends that connection, never the
   server; the lines a peer causes are logged at a bounded rate
   (:mod:`~remotemedia.log_throttle`).
4. **Closing is polite.** GOAWAY goes out with everything queued before it; then
   our side is shut down and the socket closed once the peer closes its side (or
   after ``LINGER``), so the peer reads the GOAWAY instead of a reset.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence

import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from remotemedia.config import Limits
from remotemedia.log_throttle import LogThrottle
from remotemedia.transport.connection_rules import (
    MAX_PING_STRIKES,
    ConnectionRules,
    Cutoff,
    queue_goaway,
)
from remotemedia.transport.h2_stream import WRITE_HIGH_WATER, ServerStream
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

# ServerStream (h2_stream) and MAX_PING_STRIKES (connection_rules) are imported from
# here by the calls and the tests: one place to find the native connection's names.
__all__ = ["MAX_PING_STRIKES", "Connection", "ServerStream", "peer_log"]

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 65535
"""HTTP/2's initial window, which the connection's starts from."""
MAX_HEADER_LIST_SIZE = 64 * 1024
"""Bytes of request headers (metadata) accepted."""
READ_SIZE = 256 * 1024
"""Bytes taken off the socket per wake-up at most."""
PARTING_LEAD = 0.05
"""Seconds between a peer's last stream and the GOAWAY at shutdown (see ``part``)."""

CallHandler = Callable[[ServerStream], Awaitable[None]]


def peer_log() -> LogThrottle:
    """A throttle for the lines connections' peers cause (a server keeps one for all)."""
    return LogThrottle(logger)


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
        self.rules = ConnectionRules(limits, self.log, trio.current_time())
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
                    self._cut_off(self.rules.refused())
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
            self._cut_off(self.rules.no_request())
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
            self._cut_off(self.rules.protocol_broken(error))
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
            self._cut_off(self.rules.frames_failed())
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
                self._on_ping()
            for stream in list(self._waiting_credit):
                stream._credit.unpark_all()
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, h2.events.PingReceived):
            self._on_ping()
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
        self._cut_off(self.rules.reset(trio.current_time()))

    def _on_ping(self) -> None:
        """A ping or settings change: a strike if too soon after the last, with no data."""
        cutoff = self.rules.ping(trio.current_time(), self.sent_since_ping)
        self.sent_since_ping = False
        self._cut_off(cutoff)

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
        queue_goaway(self.h2, error_code, data)
        for stream in self.streams.values():
            stream.scope.cancel()
        self._linger.deadline = min(self._linger.deadline, trio.current_time() + LINGER)
        self.wake_writer()

    def _cut_off(self, cutoff: Cutoff | None) -> None:
        """GOAWAY if the connection rules gave a reason to (they have logged it)."""
        if cutoff is not None:
            self.go_away(cutoff.error_code, cutoff.debug_data)
