"""What the conversation says back: a chat model's reply pieces and the reply turns."""

from __future__ import annotations

from typing import Any

import attrs

from remotemedia.events._base import Event


@attrs.frozen(eq=False)
class ReplyPiece(Event):
    """A piece of a reply as a chat model generates it (LFM2TextNode and the like)."""

    text: str

    def to_json(self) -> dict[str, Any]:
        """``{text, interim: true}``."""
        return {"text": self.text, "interim": True}


# --- the coordinator's reply turns -------------------------------------------------


@attrs.frozen(eq=False)
class Interrupted(Event):
    """The user barged in: the turn's ``targets`` were cancelled; nothing of it follows.

    Attributes:
        turn: The reply turn's id.
        spoken_ms: How much of its audio had played.
        targets: What was cancelled: ``llm`` and/or ``audio``.
    """

    turn: str
    spoken_ms: int
    targets: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """``{interrupted: true, turn, spoken_ms, targets}``."""
        return {
            "interrupted": True,
            "turn": self.turn,
            "spoken_ms": self.spoken_ms,
            "targets": list(self.targets),
        }


@attrs.frozen(eq=False)
class ReplySentence(Event):
    """A sentence of the reply, sent as it starts to be spoken."""

    turn: str
    reply: str

    def to_json(self) -> dict[str, Any]:
        """``{turn, reply}``."""
        return {"turn": self.turn, "reply": self.reply}


@attrs.frozen(eq=False)
class ReplyTruncated(Event):
    """The reply is cut at ``limit`` characters (``reply_chars`` had come by then)."""

    turn: str
    reply_chars: int
    limit: int

    def to_json(self) -> dict[str, Any]:
        """``{turn, truncated: true, reply_chars, limit}``."""
        return {
            "turn": self.turn,
            "truncated": True,
            "reply_chars": self.reply_chars,
            "limit": self.limit,
        }


@attrs.frozen(eq=False)
class TurnFailed(Event):
    """The responder failed; ``error`` says how."""

    turn: str
    error: str

    def to_json(self) -> dict[str, Any]:
        """``{turn, error}``."""
        return {"turn": self.turn, "error": self.error}


@attrs.frozen(eq=False)
class TurnDone(Event):
    """The turn's reply was spoken to its end: ``spoken_ms`` of audio, saying ``reply``."""

    turn: str
    spoken_ms: int
    reply: str

    def to_json(self) -> dict[str, Any]:
        """``{turn_done, spoken_ms, reply}``."""
        return {"turn_done": self.turn, "spoken_ms": self.spoken_ms, "reply": self.reply}
