"""One StreamPipeline session over one WebSocket: the browser edge's call (an adapter).

The socket's messages go to :func:`~remotemedia.service.streaming.serve_stream` as
a gRPC call's would: each request's bytes counted in the session's budget, each
response taken to the socket by a writer that waits while the browser does not
read. What gRPC says with a status is a typed ``error`` response, then a close
code; a disconnect cancels the session at once. :mod:`remotemedia.transport.web`
does the rest (HTTP, the handshake, auth, origins).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from google.protobuf.message import DecodeError

from remotemedia.errors import (
    InvalidRequestError,
    RemoteMediaError,
    ResourceLimitError,
    SessionRejected,
)
from remotemedia.service.context import ServiceContext
from remotemedia.service.status import error_response, websocket_close_code
from remotemedia.service.streaming import serve_stream
from remotemedia.session.budget import ByteBudget
from remotemedia.v1 import streaming_pb2 as spb

__all__ = ["Receive", "Send", "WebSocketCall", "fail"]


_REQUESTS = 16  # StreamRequests read ahead of the session (bounded, like gRPC's)
_RESPONSES = 16
_MESSAGE_TOO_BIG = 1009
_NORMAL = 1000

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _Refused(Exception):
    """A message the session cannot take: sent as a typed error, then the close."""

    def __init__(self, error: RemoteMediaError, code: int | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.code = code


class WebSocketCall:
    """One session over one WebSocket: a reader, the session, a writer.

    The reader hands each message to the session (its bytes counted in the session's
    budget, as gRPC's are); the writer takes each response to the socket, which waits
    while the browser does not read. A disconnect cancels the session at once; a
    message the session cannot take cancels it and is answered with a typed error.

    Args:
        context: What every call shares.
        receive: The connection's ASGI receive.
        send: The connection's ASGI send.
    """

    def __init__(self, context: ServiceContext, receive: Receive, send: Send) -> None:
        self.context = context
        self.receive = receive
        self.send = send
        self.budget = ByteBudget(context.limits.max_session_buffer_bytes)
        self.session = trio.CancelScope()
        self.reading = trio.CancelScope()
        self.written = trio.Event()
        self.gone = False
        self.refused: _Refused | None = None
        self.waiting_since = math.inf  # when the response being written began to wait

    async def run(self) -> bool:
        """Serve until the session ends; True if it ended without an error."""
        requests_send, requests_receive = trio.open_memory_channel[tuple[spb.StreamRequest, int]](
            _REQUESTS
        )
        responses_send, responses_receive = trio.open_memory_channel[bytes](_RESPONSES)
        clean = False
        rejected: SessionRejected | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.read, requests_send)
            nursery.start_soon(self.write, responses_receive)
            with self.session:
                try:
                    clean = await serve_stream(
                        requests_receive, responses_send, self.context, self.budget
                    )
                except SessionRejected as error:
                    rejected = error
            self.reading.cancel()  # the session is over: read no more
            if self.gone or self.refused is not None or rejected is not None:
                nursery.cancel_scope.cancel()  # nothing more for this socket but the error
            elif not await self.delivered():
                nursery.cancel_scope.cancel()
                self.context.log.info(
                    "A WebSocket client took no response for %g s after its session ended; "
                    "closing it.",
                    self.context.limits.idle_timeout,
                )
                return False
        if self.gone:
            return False
        failure = self.refused or (_Refused(rejected) if rejected is not None else None)
        if failure is not None:
            await fail(self.send, failure.error, failure.code)
            return False
        with contextlib.suppress(Exception):  # the browser may be closing too
            await self.send({"type": "websocket.close", "code": _NORMAL})
        return clean

    async def delivered(self) -> bool:
        """Let the writer deliver what the session left, within the idle timeout.

        The timeout counts from the session's end, or from when the response being
        written began to wait if that was earlier: a browser that stopped reading is
        cut off at once, one that reads gets the timeout to take the rest.
        """
        ended = trio.current_time()
        idle = self.context.limits.idle_timeout
        while not self.written.is_set():
            deadline = min(ended, self.waiting_since) + idle
            with trio.move_on_at(deadline):
                await self.written.wait()
            if not self.written.is_set() and trio.current_time() >= deadline:
                return False
        return True

    async def read(self, requests: trio.MemorySendChannel[tuple[spb.StreamRequest, int]]) -> None:
        """Hand the socket's messages to the session until it closes or one is refused."""
        limit = self.context.limits.max_message_bytes
        with self.reading, requests:
            while True:
                message = await self.receive()
                if message["type"] == "websocket.disconnect":
                    self.gone = True
                    self.session.cancel()  # a closed tab ends its session at once
                    return
                data = message.get("bytes")
                request = _parse(data, limit)
                if isinstance(request, _Refused):
                    self.refused = request
                    self.session.cancel()
                    return
                size = len(data or b"")
                await self.budget.take(size, requests)
                await requests.send((request, size))

    async def write(self, responses: trio.MemoryReceiveChannel[bytes]) -> None:
        """Take the session's responses to the socket, each as one binary message."""
        try:
            async with responses:
                async for message in responses:
                    self.budget.give_back(len(message))
                    self.waiting_since = trio.current_time()
                    await self.send({"type": "websocket.send", "bytes": message})
                    self.waiting_since = math.inf
        finally:
            self.written.set()


def _parse(data: bytes | None, limit: int) -> spb.StreamRequest | _Refused:
    """A WebSocket message as a request, or why the session cannot take it (sans-IO)."""
    if data is None:
        return _Refused(
            InvalidRequestError(
                "A text message arrived; each message must be a binary, serialized StreamRequest."
            )
        )
    if len(data) > limit:
        return _Refused(
            ResourceLimitError(
                f"A message of {len(data)} bytes exceeds the {limit}-byte message limit "
                "(--max-message-mb); send smaller chunks."
            ),
            _MESSAGE_TOO_BIG,
        )
    try:
        return spb.StreamRequest.FromString(data)
    except DecodeError as error:
        return _Refused(InvalidRequestError(f"A message is not a valid StreamRequest: {error}"))


async def fail(send: Send, error: RemoteMediaError, code: int | None = None) -> None:
    """Say what went wrong as a typed error response, then close with its code."""
    response = spb.StreamResponse(error=error_response(error))
    try:
        await send({"type": "websocket.send", "bytes": response.SerializeToString()})
        await send({"type": "websocket.close", "code": code or websocket_close_code(error)})
    except Exception:  # the browser is gone already
        return
