"""Restart backoff and the circuit breaker for worker processes (sans-IO, time passed in).

Rules:

1. A worker that fails (crash, hang, bad frame) is restarted after 100, 200 and
   400 ms: three tries per failure. If the third restart also fails, the node is
   failed for the session. Failures in a row start further up that ladder, so a
   worker that crashes on every input is restarted ever more slowly.
2. Every failure (including a start that does not finish in time) counts against
   the breaker of the worker's kind; only a finished input resets the count, so a
   worker that starts fine but crashes on every input still opens the breaker.
3. After 5 consecutive failures the breaker opens: no new worker of that kind
   starts, and sessions needing it fail at once with a clear error.
4. 30 s after opening, the breaker lets one probe through (half-open): a probe that
   starts closes the breaker, one that fails opens it again for another 30 s, and a
   probe abandoned (its session cancelled) lets the next one through.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

import attrs

__all__ = ["BreakerState", "CircuitBreaker", "RestartPolicy"]


@attrs.frozen
class RestartPolicy:
    """How often, and after which pauses, a failed worker is restarted.

    Attributes:
        delays: The pause before each restart attempt, in seconds; one try each.
    """

    delays: tuple[float, ...] = (0.1, 0.2, 0.4)

    def attempts(self, failures_in_row: int = 1) -> Iterator[tuple[int, float]]:
        """Yield (attempt number from 1, pause before it) for every allowed restart.

        Args:
            failures_in_row: How many times in a row this worker has failed; the
                pauses start that far up the ladder (and stay at its top).
        """
        top = len(self.delays) - 1
        start = max(0, failures_in_row - 1)
        for attempt in range(1, len(self.delays) + 1):
            yield attempt, self.delays[min(start + attempt - 1, top)]


class BreakerState(enum.Enum):
    """Where a circuit breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.define
class CircuitBreaker:
    """Stops starting workers that keep failing; tries again after a pause.

    Attributes:
        threshold: Consecutive failures that open the breaker.
        reset_after: Seconds the breaker stays open before letting one probe through.
    """

    threshold: int = 5
    reset_after: float = 30.0
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    _probing: bool = False

    def allow(self, now: float) -> bool:
        """Whether a worker may start now (moves OPEN to HALF_OPEN once the pause is over)."""
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.reset_after:
            self.state, self._probing = BreakerState.HALF_OPEN, False
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True  # exactly one probe
            return True
        return False

    def record_started(self) -> None:
        """A worker became ready: a probe closes the breaker (the count stays)."""
        if self.state is BreakerState.HALF_OPEN:
            self.state, self._probing = BreakerState.CLOSED, False

    def record_success(self) -> None:
        """A worker finished an input: close and reset the count."""
        self.state, self.failures, self._probing = BreakerState.CLOSED, 0, False

    def abandon_probe(self) -> None:
        """A probe ended without an outcome (cancelled): let the next one through."""
        if self.state is BreakerState.HALF_OPEN:
            self._probing = False

    @property
    def idle(self) -> bool:
        """Closed with no failures counted: forgetting it loses nothing."""
        return self.state is BreakerState.CLOSED and self.failures == 0

    def record_failure(self, now: float) -> None:
        """A worker failed; open the breaker at the threshold, or when a probe fails."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.state, self.opened_at, self._probing = BreakerState.OPEN, now, False

    def retry_in(self, now: float) -> float:
        """Seconds until a probe is allowed (0 when not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.reset_after - now)
