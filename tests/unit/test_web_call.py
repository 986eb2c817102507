"""The WebSocket call's wire: messages in, and a browser's trace context first."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from remotemedia.service.wire import CallOrigin
from remotemedia.transport.web_call import _Refused, _SocketWire

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def wire_of(*messages: dict[str, Any]) -> tuple[_SocketWire, CallOrigin]:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return queue.pop(0)

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("nothing is sent here")

    origin = CallOrigin("websocket")
    return _SocketWire(receive, send, 1024, origin), origin


async def test_a_first_text_message_gives_the_calls_traceparent() -> None:
    wire, origin = wire_of(
        {"type": "websocket.receive", "text": f'{{"traceparent": "{TRACEPARENT}"}}'},
        {"type": "websocket.receive", "bytes": b"init"},
    )
    assert await wire.receive() == b"init"
    assert origin.traceparent == TRACEPARENT


@pytest.mark.parametrize(
    "messages",
    [
        # text after the first message
        (
            {"type": "websocket.receive", "bytes": b"init"},
            {"type": "websocket.receive", "text": "{}"},
        ),
        # a first text message that is not {"traceparent"}
        ({"type": "websocket.receive", "text": '{"token": "x"}'},),
    ],
)
async def test_other_text_messages_are_refused_naming_what_is_allowed(
    messages: tuple[dict[str, Any], ...],
) -> None:
    wire, _ = wire_of(*messages)
    for _ in messages[:-1]:
        await wire.receive()
    with pytest.raises(_Refused, match="binary, serialized StreamRequest"):
        await wire.receive()
