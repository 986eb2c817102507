"""One call's HTTP/2 stream on the native transport: its messages and its flow control.

A :class:`ServerStream` is what a call's handler holds
(:mod:`~remotemedia.transport.native_calls`); its
:class:`~remotemedia.transport.h2_connection.Connection` feeds it the request's
DATA and writes what it queues with ``h2``. Its rules:

1. **Request messages in order.** DATA is cut into gRPC messages as it arrives;
   a handler may take them straight from the connection's reader (``deliver``)
   while none waits, else through :meth:`ServerStream.receive`.
2. **Stream credit follows the handler.** Credit is returned in batches of half a
   window for bytes taken or not yet part of a whole message; bytes in whole
   messages not taken yet are held, so a stalled handler stops its own client and
   no other stream (the connection's credit is the connection's).
3. **Responses under flow control, without copies.** :meth:`ServerStream.send`
   waits for window and, past ``WRITE_HIGH_WATER`` queued for the socket, for the
   socket; :meth:`ServerStream.send_now` writes only what needs no wait. A large
   message is written from a view of itself, its prefix in front.
4. **One ending.** Trailers (:meth:`ServerStream.end`) or RST_STREAM
   (:meth:`ServerStream.reset`), whichever comes first; after it, or once the
   connection is lost, nothing more is written.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import TYPE_CHECKING

import h2.exceptions
import trio
from h2.errors import ErrorCodes

from remotemedia.transport.http2 import STREAM_WINDOW
from remotemedia.transport.messages import (
    PREFIX,
    CallError,
    GrpcStatus,
    MessageReader,
    response_headers,
    trailers,
)

if TYPE_CHECKING:
    from remotemedia.transport.h2_connection import Connection

__all__ = ["LARGE_MESSAGE", "WRITE_HIGH_WATER", "ServerStream"]

WRITE_HIGH_WATER = 256 * 1024
"""Bytes of responses a connection may have queued for its socket before senders wait."""
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

    def abort(self) -> None:
        """Drop the client's whole connection now (the call's wire can do no less)."""
        self.connection.abort()

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
