"""Responders: what a conversation coordinator asks for the reply to a user's turn.

A responder streams the reply's text in pieces (tokens, words or sentences); the
coordinator splits them into sentences and speaks each as soon as it is complete.
It is called inside the reply turn's cancel scope, so a barge-in cancels it at its
next checkpoint.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol

import attrs

from remotemedia.errors import RemoteMediaError, UpstreamError
from remotemedia.events import ReplyPiece, event_of
from remotemedia.media import Json
from remotemedia.nodes.base import Node

__all__ = ["Exchange", "LoopbackResponder", "NodeResponder", "Responder"]


@attrs.frozen
class Exchange:
    """One earlier turn of the conversation: what the user said and what was replied.

    Attributes:
        user: The user's transcript.
        reply: The reply as far as it was spoken (cut short by a barge-in).
        interrupted: The user interrupted the reply.
    """

    user: str
    reply: str
    interrupted: bool = False


class Responder(Protocol):
    """Makes the reply to a user's turn."""

    def reply(self, text: str, history: Sequence[Exchange]) -> AsyncGenerator[str, None]:
        """Stream the reply to ``text``, given the earlier turns (oldest first)."""
        ...


class LoopbackResponder:
    """Replies with what it heard ("You said: ..."): a conversation with no model behind it."""

    async def reply(self, text: str, history: Sequence[Exchange]) -> AsyncGenerator[str, None]:
        """Say the user's words back."""
        yield f"You said: {text}"


class NodeResponder:
    """Replies with a chat node the coordinator owns, such as an LFM2TextNode.

    The node runs where the session puts it (a model node: in a worker process, in
    its own environment). It gets the turn as Json ``{"text", "history"}`` and
    streams ``{"text": piece, "interim": true}`` results (read as
    :class:`~remotemedia.events.ReplyPiece`); closing the reply (a barge-in) stops
    its generation in the worker.
    """

    def __init__(self, node: Node[Any]) -> None:
        self.node = node

    async def reply(self, text: str, history: Sequence[Exchange]) -> AsyncGenerator[str, None]:
        """Stream the node's reply to ``text``."""
        turns = [{"user": e.user, "reply": e.reply} for e in history]
        outputs = self.node.process(Json({"text": text, "history": turns}))
        if not inspect.isasyncgen(outputs):
            raise UpstreamError(f"{self.node.node_type} does not stream its replies")
        try:
            async with contextlib.aclosing(outputs) as pieces:
                async for item in pieces:
                    if isinstance(piece := event_of(item), ReplyPiece):
                        yield piece.text
        except RemoteMediaError:
            raise
        except Exception as exc:  # the node's own failure, as the coordinator reports them
            raise UpstreamError(f"{self.node.node_type} failed: {exc}") from exc
