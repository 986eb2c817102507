"""Fixtures of the integration tests (real processes, real shared memory)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from remotemedia.executors.process import default_namespace
from tests.processes import worker_pids


@pytest.fixture
def no_leftover_workers() -> Iterator[None]:
    """Fail the test if a worker process or a shared-memory file outlives it."""
    before = worker_pids()
    yield
    assert worker_pids() - before == set(), "a worker process outlived its session"
    assert default_namespace().files() == [], "shared memory of a session was left behind"
