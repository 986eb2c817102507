"""Admission and drain: how many sessions run, and stopping them all on shutdown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import attrs
import trio

from remotemedia.errors import SessionRejected

__all__ = ["SessionManager", "SessionRejected"]


@attrs.frozen
class _Live:
    scope: trio.CancelScope
    stop_input: Callable[[], None] | None


class SessionManager:
    """Tracks live sessions: admits up to ``max_sessions``, and drains them on shutdown.

    Each admitted session registers its cancel scope, the session's one off switch,
    and optionally a way to stop taking input. Shutdown is two steps: :meth:`drain`
    refuses new sessions and asks live ones to stop taking input (they finish their
    in-flight work and tell their clients), then, once the drain timeout has passed,
    :meth:`cancel_all` cancels whatever is still live. A session can tell it was
    stopped by a drain (and say so to its client) through :attr:`draining`.
    """

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._live: dict[str, _Live] = {}
        self._waiting: set[trio.CancelScope] = set()
        self._empty = trio.Event()
        self._empty.set()
        self._ended = trio.lowlevel.ParkingLot()
        self.draining = False

    @property
    def count(self) -> int:
        """The number of live sessions."""
        return len(self._live)

    @contextmanager
    def admit(
        self,
        session_id: str,
        scope: trio.CancelScope,
        stop_input: Callable[[], None] | None = None,
    ) -> Iterator[None]:
        """Hold a session slot for the duration of the block.

        Args:
            session_id: The session's id.
            scope: Cancelling it stops the session at once.
            stop_input: Called when a drain starts: the session should take no more
                input, finish what it has and end. Without it the session runs until
                it ends or :meth:`cancel_all`.

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
        self._live[session_id] = _Live(scope, stop_input)
        self._empty = trio.Event() if self._empty.is_set() else self._empty
        try:
            yield
        finally:
            del self._live[session_id]
            if not self._live:
                self._empty.set()
            self._ended.unpark_all()

    async def wait_ended(self) -> None:
        """Wait until a session ends (one that ends while nobody waits is not counted)."""
        await self._ended.park()

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
        """Refuse new sessions, end calls still waiting for one, stop live sessions' input."""
        self.draining = True
        for scope in self._waiting:
            scope.cancel()
        for live in list(self._live.values()):
            if live.stop_input is not None:
                live.stop_input()

    def cancel_all(self) -> None:
        """Cancel every live session (when the drain timeout has passed)."""
        for live in self._live.values():
            live.scope.cancel()
