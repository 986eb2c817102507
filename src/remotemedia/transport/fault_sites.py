"""The gRPC transport's fault sites: a StreamPipeline message read or about to be written.

They run on the asyncio side (grpclib's handler), so waiting here is asyncio's. What
each action does at this seam:

- ``delay``: hold the message that long.
- ``disconnect``: drop the client's TCP connection (the session sees its client go).
- ``corrupt`` (receive): the message's bytes are flipped and decoded again, as if
  they had arrived so; what does not decode is the client's INVALID_ARGUMENT.
- ``stall`` (send): never write this or any later response, as a client that stops
  reading leaves a server (the session must end by its limits).
- ``sigterm_server``: SIGTERM this process; the server drains as on a real one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf.message import DecodeError
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from remotemedia import faults
from remotemedia.executors import injection
from remotemedia.faults import Action, ActionKind, Site

__all__ = ["at_receive", "at_send"]


async def at_receive(stream: Stream[Any, Any], message: Any) -> Any:
    """The request message as the session gets it under an installed plan."""
    action = faults.reached(Site.GRPC_RECEIVE)
    if action is None:
        return message
    if action.kind is ActionKind.CORRUPT:
        data = injection.corrupted(message.SerializeToString())
        try:
            return type(message).FromString(data)
        except DecodeError as error:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"A message is not a valid {type(message).__name__}: {error}",
            ) from None
    await _perform(stream, action)
    return message


async def at_send(stream: Stream[Any, Any]) -> None:
    """Before a response is written under an installed plan: its fault, if one is due."""
    action = faults.reached(Site.GRPC_SEND)
    if action is None:
        return
    if action.kind is ActionKind.STALL:
        await asyncio.Event().wait()  # until the call is cancelled
    await _perform(stream, action)


async def _perform(stream: Stream[Any, Any], action: Action) -> None:
    if action.kind is ActionKind.DELAY:
        await asyncio.sleep(action.delay_ms / 1000)
    elif action.kind is ActionKind.DISCONNECT:
        transport = getattr(getattr(stream, "_stream", None), "_transport", None)
        if transport is not None:
            transport.close()
    elif action.kind is ActionKind.SIGTERM_SERVER:
        injection.sigterm_server()
