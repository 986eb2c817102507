"""One StreamPipeline session over one WebSocket: the browser edge's call (an adapter).

The socket is the call's :class:`~remotemedia.service.wire.Wire` and the service's
call runner (:mod:`remotemedia.service.calls`) runs it as it runs a gRPC call: each
request's bytes counted in the session's budget, each response taken to the socket
by a writer that waits while the browser does not read. What gRPC says with a status
is a typed ``error`` response, then a close code; a disconnect cancels the session at
once. :mod:`remotemedia.transport.web` does the rest (HTTP, the handshake, auth,
origins).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from remotemedia.errors import InvalidRequestError, RemoteMediaError, ResourceLimitError
from remotemedia.service.calls import CallEnd, run_stream_call
from remotemedia.service.context import ServiceContext
from remotemedia.service.status import error_response, websocket_close_code
from remotemedia.service.wire import CallOrigin, ClientGone
from remotemedia.v1 import streaming_pb2 as spb

__all__ = ["Receive", "Send", "WebSocketCall", "fail"]


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
    """One session over one WebSocket: the call runner over the socket's messages.

    A disconnect cancels the session at once; a message the session cannot take
    cancels it and is answered with a typed error, then the close.

    Args:
        context: What every call shares.
        receive: The connection's ASGI receive.
        send: The connection's ASGI send.
    """

    def __init__(
        self,
        context: ServiceContext,
        receive: Receive,
        send: Send,
        origin: CallOrigin | None = None,
    ) -> None:
        self.context = context
        self.receive = receive
        self.send = send
        self.origin = origin or CallOrigin("websocket")

    async def run(self) -> bool:
        """Serve until the session ends; True if it ended without an error."""
        limit = self.context.limits.max_message_bytes
        wire = _SocketWire(self.receive, self.send, limit, self.origin)
        try:
            with wire.scope:
                end = await run_stream_call(wire, self.context, self.origin)
        except _Refused as refused:
            await fail(self.send, refused.error, refused.code)
            return False
        except RemoteMediaError as error:  # refused admission, an oversized response
            await fail(self.send, error)
            return False
        if wire.scope.cancelled_caught or end in (CallEnd.GONE, CallEnd.STALLED):
            return False  # nothing more for this socket
        with contextlib.suppress(Exception):  # the browser may be closing too
            await self.send({"type": "websocket.close", "code": _NORMAL})
        return end is CallEnd.CLEAN


class _SocketWire:
    """A WebSocket as a call's :class:`~remotemedia.service.wire.Wire`: one message each way."""

    def __init__(self, receive: Receive, send: Send, limit: int, origin: CallOrigin) -> None:
        self._receive = receive
        self._send = send
        self.limit = limit
        self.origin = origin
        self.deliver: Callable[[bytes], bool] | None = None  # (not used: the runner reads)
        self.scope = trio.CancelScope()  # the call's: abort() ends it
        self._first = True

    async def receive(self) -> bytes | None:
        """The next binary message.

        The first message may instead be the text ``{"traceparent": "00-..."}``: a
        browser cannot set the header, so its trace context comes first (it is kept
        in the call's origin, and the next message is read).

        Raises:
            ClientGone: The browser closed the socket (a closed tab ends its session).
            _Refused: A message the session cannot take.
        """
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            raise ClientGone
        if self._first and message.get("text") is not None:
            self._first = False
            self.origin.take_traceparent(_traceparent_of(message["text"]))
            return await self.receive()
        self._first = False
        data = message.get("bytes")
        refused = _refusal(data, self.limit)
        if refused is not None:
            raise refused
        assert data is not None
        return bytes(data)

    def send_now(self, data: bytes) -> bool:
        """Never at once: ASGI sends are awaited."""
        return False

    async def send(self, data: bytes) -> None:
        """Send one response as a binary message; waits while the browser does not read."""
        await self._send({"type": "websocket.send", "bytes": data})

    def abort(self) -> None:
        """End the call now: the server then drops the socket."""
        self.scope.cancel()


def _traceparent_of(text: str) -> object:
    """The ``traceparent`` of a first text message; a refusal if it is no such message."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if not isinstance(document, dict) or set(document) != {"traceparent"}:
        raise _Refused(
            InvalidRequestError(
                'A text message arrived; only the first may be text, {"traceparent": '
                '"00-..."}; every other must be a binary, serialized StreamRequest.'
            )
        )
    return document["traceparent"]


def _refusal(data: bytes | None, limit: int) -> _Refused | None:
    """Why the session cannot take a WebSocket message, if it cannot (sans-IO)."""
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
    return None


async def fail(send: Send, error: RemoteMediaError, code: int | None = None) -> None:
    """Say what went wrong as a typed error response, then close with its code."""
    response = spb.StreamResponse(error=error_response(error))
    try:
        await send({"type": "websocket.send", "bytes": response.SerializeToString()})
        await send({"type": "websocket.close", "code": code or websocket_close_code(error)})
    except Exception:  # the browser is gone already
        return
