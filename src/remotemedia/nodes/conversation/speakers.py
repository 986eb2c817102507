"""Speakers: the voice a conversation coordinator speaks its replies with.

A speaker turns one piece of a reply into audio, streamed as it is synthesised. The
coordinator closes a speech it no longer wants (a barge-in) without waiting for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any, Protocol

import trio

from remotemedia.media import Audio, Text
from remotemedia.nodes.base import Node
from remotemedia.nodes.tts.piper import PiperParams, PiperTTSNode

__all__ = ["PiperSpeaker", "Speaker"]


class Speaker(Protocol):
    """Text to speech, as the coordinator uses it."""

    async def initialize(self) -> None:
        """Load the voice."""

    def speak(self, text: str) -> AsyncGenerator[Audio, None]:
        """Yield the audio of ``text`` as it is synthesised."""
        ...

    async def cleanup(self) -> None:
        """Release the voice."""


class PiperSpeaker:
    """Piper, as a child node of the coordinator: in a worker process on a server.

    The session builds the child by its executor rules, so Piper runs where a
    ``PiperTTSNode`` of the manifest would (its own worker, by default on a server;
    in-process, in a thread per call, elsewhere).
    """

    def __init__(self, owner: Node[Any], voice: str | None) -> None:
        self._owner = owner
        self._params = PiperParams(voice=voice, variation=False)
        self._tts: Node[Any] | None = None
        # One piece at a time: a cut turn's piece must be closed before the next
        # turn's goes to the same worker (a cancelled task runs on to its checkpoint).
        self._lock = trio.Lock()

    async def initialize(self) -> None:
        """Make the voice (a child node) and load it: the worker is ready before the session."""
        self._tts = self._owner.make_child("tts", PiperTTSNode, self._params)
        await self._tts.initialize()

    async def speak(self, text: str) -> AsyncGenerator[Audio, None]:
        """Yield the audio of ``text``, a sentence at a time."""
        assert self._tts is not None
        async with self._lock:
            voice = self._tts.process(Text(text))
            assert isinstance(voice, AsyncGenerator)  # PiperTTSNode's, or its ProcessNode's
            async with contextlib.aclosing(voice):
                async for audio in voice:
                    if isinstance(audio, Audio):
                        yield audio

    async def cleanup(self) -> None:
        """Release the voice (stop its worker)."""
        if self._tts is not None:
            await self._tts.cleanup()
