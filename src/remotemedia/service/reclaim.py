"""Giving the memory of ended sessions back, soon after they end.

A session that ends, above all one that ends with an error, can leave reference
cycles behind: its traceback reaches its own frames (we break the ones we know of),
and dependencies make more (Trio keeps a child task's frames alive through the
traceback of a ``Cancelled`` delivered to it). Such garbage waits for Python's next
full collection, which on a busy server may be many sessions away; measured, each
stalled session that ended left its 32 MiB of queued messages behind, and RSS grew
round after round. Then glibc keeps freed heap memory resident until told otherwise.

So after sessions end, at most once per ``interval``, the server runs a full
collection and ``malloc_trim(0)``. The objects that live as long as the process are
frozen once at startup (``gc.freeze``, by ``remotemedia serve``), which keeps a full
collection to about a millisecond.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

import trio

from remotemedia.session.manager import SessionManager

__all__ = ["RECLAIM_INTERVAL", "serve_reclaim"]

RECLAIM_INTERVAL = 1.0
"""Seconds between collections at most (sessions that end meanwhile share one)."""


def _malloc_trim() -> Callable[[], object]:
    """The C library's ``malloc_trim(0)``: free heap pages go back (glibc; elsewhere a no-op)."""
    try:
        trim: Callable[[int], object] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda: None
    return lambda: trim(0)


async def serve_reclaim(manager: SessionManager, interval: float | None = None) -> None:
    """Collect garbage and trim the heap after sessions end, until cancelled.

    Args:
        manager: Whose sessions to follow.
        interval: Seconds between collections at most; default ``RECLAIM_INTERVAL``.
    """
    trim = _malloc_trim()
    while True:
        await manager.wait_ended()
        # The sessions that end meanwhile count with this one.
        await trio.sleep(RECLAIM_INTERVAL if interval is None else interval)
        gc.collect()
        trim()
