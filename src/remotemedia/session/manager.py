"""Admission and drain: how many sessions run, and stopping them all on shutdown."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

from remotemedia.errors import SessionRejected

__all__ = ["SessionManager", "SessionRejected"]


class SessionManager:
    """Tracks live sessions: admits up to ``max_sessions`` and cancels them all on drain.

    Each admitted session registers its cancel scope, the session's one off switch;
    :meth:`drain` cancels every scope and refuses new sessions. A session can tell it
    was stopped by a drain (and say so to its client) through :attr:`draining`.
    """

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._live: dict[str, trio.CancelScope] = {}
        self._waiting: set[trio.CancelScope] = set()
        self._empty = trio.Event()
        self._empty.set()
        self.draining = False

    @property
    def count(self) -> int:
        """The number of live sessions."""
        return len(self._live)

    @contextmanager
    def admit(self, session_id: str, scope: trio.CancelScope) -> Iterator[None]:
        """Hold a session slot for the duration of the block.

        Raises:
            SessionRejected: The server is full or shutting down.
        """
        if self.draining:
            raise SessionRejected(
                "The server is shutting down and accepts no new sessions; retry on another "
                "replica.",
                shutting_down=True,
            )
        if len(self._live) >= self.max_sessions:
            raise SessionRejected(
                f"The server already runs {self.max_sessions} sessions, its limit "
                "(--max-sessions); retry later."
            )
        self._live[session_id] = scope
        self._empty = trio.Event() if self._empty.is_set() else self._empty
        try:
            yield
        finally:
            del self._live[session_id]
            if not self._live:
                self._empty.set()

    async def wait_empty(self) -> None:
        """Wait until no session is live."""
        await self._empty.wait()

    @contextmanager
    def waiting(self, scope: trio.CancelScope) -> Iterator[None]:
        """Register a call that has not started a session yet, so a drain can end it.

        Raises:
            SessionRejected: The server is shutting down.
        """
        if self.draining:
            raise SessionRejected(
                "The server is shutting down and accepts no new sessions.", shutting_down=True
            )
        self._waiting.add(scope)
        try:
            yield
        finally:
            self._waiting.discard(scope)

    def drain(self) -> None:
        """Refuse new sessions, and cancel every live one and every call still waiting."""
        self.draining = True
        for scope in [*self._live.values(), *self._waiting]:
            scope.cancel()
