"""Seeing what sessions do: per-turn latency (sans-IO), for metrics, logs and ``top``."""

from remotemedia.observability.turns import (
    STAGES,
    TOTALS,
    NodeRole,
    Turn,
    TurnObserver,
    TurnTracker,
    roles_watched,
)

__all__ = [
    "STAGES",
    "TOTALS",
    "NodeRole",
    "Turn",
    "TurnObserver",
    "TurnTracker",
    "roles_watched",
]
