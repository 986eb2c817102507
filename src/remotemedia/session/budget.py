"""A byte budget for everything a session has queued, across all its channels.

Channels bound what they hold in messages; a message may be megabytes, so a session
also bounds its queued *bytes*. Every send into one of the session's channels takes
the message's size from the budget, every receive gives it back, and a sender
waits while the budget is spent.

Rules:

1. A send that fits the budget goes ahead.
2. A send to a channel whose receiver is already waiting goes ahead even when the
   budget is spent: the message is handed straight to a task that will work on it,
   so it is never queued. This keeps a pipeline from deadlocking on its own
   budget: of all the blocked senders, the one furthest downstream always has an
   idle receiver.
3. A message larger than the whole budget goes ahead when nothing else is queued.
4. So queued bytes never exceed the budget by more than the messages being handed
   over, and each task holds at most the one message it is working on.
"""

from __future__ import annotations

from typing import Protocol

import trio

__all__ = ["ByteBudget", "Receiver"]


class _Statistics(Protocol):
    @property
    def tasks_waiting_receive(self) -> int:
        """Receivers waiting for a message."""


class Receiver(Protocol):
    """What the budget asks of a channel: whether its receiver waits (rule 2).

    A ``trio.MemorySendChannel`` is one; so is any sink that hands messages on at once.
    """

    def statistics(self) -> _Statistics:
        """The channel's statistics."""


class ByteBudget:
    """Bytes a session may hold queued in its channels (see the module's rules).

    Args:
        limit: The budget, in bytes.
    """

    __slots__ = ("_lot", "limit", "used", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        # How many senders wait for room. Public so that hot loops can inline
        # give_back(): ``used -= size`` and, only if this is not 0, wake().
        self.waiting = 0
        self._lot = trio.lowlevel.ParkingLot()

    def try_take(self, size: int, channel: Receiver) -> bool:
        """Take ``size`` bytes for a send to ``channel`` if the rules allow it now."""
        used = self.used
        if used + size <= self.limit or not used or channel.statistics().tasks_waiting_receive:
            self.used = used + size
            return True
        return False

    async def take(self, size: int, channel: Receiver) -> None:
        """Take ``size`` bytes for a send to ``channel``, waiting until the rules allow it."""
        while not self.try_take(size, channel):
            self.waiting += 1
            try:
                await self._lot.park()
            finally:
                self.waiting -= 1

    def give_back(self, size: int) -> None:
        """Return the bytes of a message taken off a channel."""
        self.used -= size
        if self.waiting:
            self._lot.unpark_all()

    def wake(self) -> None:
        """Let waiting senders check the rules again (room was made, or a receiver waits)."""
        self._lot.unpark_all()

    def receiver_waiting(self) -> None:
        """Call before a receiver waits: a sender over budget may now hand it a message."""
        if self.waiting:
            self._lot.unpark_all()
