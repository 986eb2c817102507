"""Responders: what a conversation coordinator asks for the reply to a user's turn.

A responder streams the reply's text in pieces (tokens, words or sentences); the
coordinator splits them into sentences and speaks each as soon as it is complete.
It is called inside the reply turn's cancel scope, so a barge-in cancels it at its
next checkpoint.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Protocol

import attrs

__all__ = ["Exchange", "LoopbackResponder", "Responder"]


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
