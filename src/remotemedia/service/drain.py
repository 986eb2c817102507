"""The drain a server runs on shutdown, over every edge, once they have stopped accepting."""

from __future__ import annotations

import logging
from typing import Protocol

import trio

from remotemedia.session.lifecycle import CLEANUP_TIMEOUT
from remotemedia.session.manager import SessionManager

__all__ = ["CANCEL_GRACE", "AllCalls", "CountedCalls", "drain_calls"]

logger = logging.getLogger(__name__)

CANCEL_GRACE = CLEANUP_TIMEOUT + 1.0
"""Seconds cancelled calls get after a drain timeout: their nodes' cleanup (workers
stopped within CLEANUP_TIMEOUT), then ``closed`` and their trailers."""


class CountedCalls(Protocol):
    """An edge's count of calls not finished (their last byte not written)."""

    @property
    def live(self) -> int:
        """Calls not finished."""

    async def wait_idle(self) -> None:
        """Wait until no call is live."""


class AllCalls:
    """Several edges' calls counted as one (gRPC and the browser's WebSockets)."""

    def __init__(self, *parts: CountedCalls | None) -> None:
        self.parts = [part for part in parts if part is not None]

    @property
    def live(self) -> int:
        """Calls not finished, over every edge."""
        return sum(part.live for part in self.parts)

    async def wait_idle(self) -> None:
        """Wait until no call of any edge is live."""
        for part in self.parts:
            await part.wait_idle()


async def drain_calls(manager: SessionManager, calls: CountedCalls, timeout: float) -> None:
    """Live sessions take no more input, finish and say ``closed``; then their calls end.

    They get ``timeout`` for that, then whatever is left is cancelled (and still
    says ``closed``, within ``CANCEL_GRACE``).
    """
    manager.drain()
    with trio.move_on_after(timeout):
        await calls.wait_idle()  # each call has sent `closed` and its status
    if calls.live:
        logger.warning(
            "%d calls did not end within %.1f s of shutdown; cancelling them.", calls.live, timeout
        )
        manager.cancel_all()
        with trio.move_on_after(CANCEL_GRACE):
            await calls.wait_idle()
