"""The process-wide circuit breakers, one per worker configuration (node type and params).

The breaker itself, and the rules it follows, are in
:mod:`remotemedia.executors.supervision`; this module only decides which breaker a
worker answers to and keeps the registry of them bounded.
"""

from __future__ import annotations

import json
import time
from typing import Any

from remotemedia.executors.supervision import CircuitBreaker

__all__ = ["breaker_for", "now"]

_BREAKERS: dict[str, CircuitBreaker] = {}
_MAX_BREAKERS = 256  # clients choose params: forget idle breakers beyond this many


def breaker_for(node_type: str, params: dict[str, Any]) -> CircuitBreaker:
    """The process-wide circuit breaker of workers of one node type and params.

    Keyed by params too, so a client whose params make every start fail (a bad
    model name) opens the breaker for that configuration only, not for everyone.
    """
    key = f"{node_type} {json.dumps(params, sort_keys=True, default=str)}"
    breaker = _BREAKERS.get(key)
    if breaker is None:
        if len(_BREAKERS) >= _MAX_BREAKERS:
            for stale in [k for k, b in _BREAKERS.items() if b.idle]:
                del _BREAKERS[stale]
        breaker = _BREAKERS[key] = CircuitBreaker()
    return breaker


def now() -> float:
    """The time to pass to the breakers (seconds, monotonic)."""
    # Breakers outlive any one trio.run (whose clock has a random offset).
    return time.monotonic()
