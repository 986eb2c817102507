"""The gRPC transports' fault sites: a StreamPipeline message read or about to be written.

Both transports call these, each with its own ways to wait and to drop a connection
(:class:`Edge`): grpclib's on asyncio, the native one on Trio. What each action does
at this seam:

- ``delay``: hold the message that long.
- ``disconnect``: drop the client's TCP connection (the session sees its client go).
- ``corrupt`` (receive): the message's bytes are flipped and decoded again, as if
  they had arrived so; what does not decode is the client's INVALID_ARGUMENT.
- ``stall`` (send): never write this or any later response, as a client that stops
  reading leaves a server (the session must end by its limits).
- ``sigterm_server``: SIGTERM this process; the server drains as on a real one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
from google.protobuf.message import DecodeError

from remotemedia import faults
from remotemedia.executors import injection
from remotemedia.faults import Action, ActionKind, Site

__all__ = ["Edge", "at_receive", "at_send"]

M = TypeVar("M")


@attrs.frozen
class Edge:
    """How a transport carries out a fault on one call.

    Attributes:
        sleep: Waits that many seconds (in the transport's event loop).
        forever: Waits until the call is cancelled.
        disconnect: Drops the call's TCP connection now.
        invalid: The transport's INVALID_ARGUMENT error, with a message.
    """

    sleep: Callable[[float], Awaitable[Any]]
    forever: Callable[[], Awaitable[Any]]
    disconnect: Callable[[], None]
    invalid: Callable[[str], Exception]


async def at_receive(edge: Edge, message: M) -> M:
    """The request message as the session gets it under an installed plan."""
    action = faults.reached(Site.GRPC_RECEIVE)
    if action is None:
        return message
    if action.kind is ActionKind.CORRUPT:
        data = injection.corrupted(message.SerializeToString())  # type: ignore[attr-defined]
        try:
            corrupted: M = type(message).FromString(data)  # type: ignore[attr-defined]
        except DecodeError as error:
            raise edge.invalid(
                f"A message is not a valid {type(message).__name__}: {error}"
            ) from None
        return corrupted
    await _perform(edge, action)
    return message


async def at_send(edge: Edge) -> None:
    """Before a response is written under an installed plan: its fault, if one is due."""
    action = faults.reached(Site.GRPC_SEND)
    if action is None:
        return
    if action.kind is ActionKind.STALL:
        await edge.forever()
    await _perform(edge, action)


async def _perform(edge: Edge, action: Action) -> None:
    if action.kind is ActionKind.DELAY:
        await edge.sleep(action.delay_ms / 1000)
    elif action.kind is ActionKind.DISCONNECT:
        edge.disconnect()
    elif action.kind is ActionKind.SIGTERM_SERVER:
        injection.sigterm_server()
