"""The load generator's bookkeeping: the capacity search and the report."""

from __future__ import annotations

import math

import pytest

from remotemedia.cli.loadtest import LoadStats, capacity_of, next_probe


def _search(capacity: int, start: int, limit: int) -> list[int]:
    """The counts tried against a server that holds exactly ``capacity`` sessions."""
    history: list[tuple[int, bool]] = []
    while (count := next_probe(history, start, limit)) is not None:
        assert 1 <= count <= limit
        assert count not in [tried for tried, _ in history]
        history.append((count, count <= capacity))
    assert capacity_of(history) == min(capacity, limit)
    return [count for count, _ in history]


@pytest.mark.parametrize(
    ("capacity", "start", "limit", "tried"),
    [
        (37, 10, 1000, [10, 20, 40, 30, 35, 37, 38]),
        (5, 10, 1000, [10, 5, 7, 6]),
        (0, 1, 1000, [1]),
        (2000, 10, 100, [10, 20, 40, 80, 100]),
    ],
)
def test_capacity_search_doubles_then_bisects(
    capacity: int, start: int, limit: int, tried: list[int]
) -> None:
    assert _search(capacity, start, limit) == tried


def test_capacity_search_finds_every_capacity_exactly() -> None:
    for capacity in range(0, 130):
        _search(capacity, 8, 120)


def test_report_has_the_counts_percentiles_errors_and_servers() -> None:
    stats = LoadStats(started=4, ok=3, failed=1, chunks_sent=40, results=30, seconds=2.0)
    stats.latencies_ms.extend(float(n) for n in range(1, 101))
    stats.errors["RESOURCE_EXHAUSTED"] += 1
    stats.servers.update({"pod-a/1": 2, "pod-b/7": 1})
    table = stats.table()
    assert "sessions ok / failed           3 / 1" in table
    assert "50.5 / 95.0 / 99.0 ms" in table
    assert "30 (15/s over 2.0 s)" in table
    assert "error: RESOURCE_EXHAUSTED" in table
    assert "server pod-a/1                 2 sessions (67 %)" in table
    assert stats.live == 0
    assert math.isnan(LoadStats().percentile(99))
