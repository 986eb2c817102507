"""Restart backoff and the circuit breaker for worker processes (sans-IO, time passed in).

Rules:

1. A worker that fails (crash, hang, bad frame) is restarted after 100, 200 and
   400 ms: three tries per failure. If the third restart also fails, the node is
   failed for the session.
2. Every failure counts against the node type's circuit breaker; a success (a
   restarted worker that became ready) resets the count.
3. After 5 consecutive failures the breaker opens: no new worker of that node type
   starts, and sessions needing it fail at once with a clear error.
4. 30 s after opening, the breaker lets one probe through (half-open): its success
   closes the breaker, its failure opens it again for another 30 s.
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

    def attempts(self) -> Iterator[tuple[int, float]]:
        """Yield (attempt number from 1, pause before it) for every allowed restart."""
        yield from enumerate(self.delays, start=1)


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

    def record_success(self) -> None:
        """A worker started (or a probe succeeded): close and reset."""
        self.state, self.failures, self._probing = BreakerState.CLOSED, 0, False

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
