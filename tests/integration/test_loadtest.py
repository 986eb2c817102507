"""`remotemedia loadtest` against a real server process."""

from __future__ import annotations

import re
import sys

import pytest
import trio

from tests.processes import server_process

pytestmark = pytest.mark.slow

LOADTEST = [sys.executable, "-m", "remotemedia", "loadtest"]


async def _loadtest(*args: str) -> tuple[int, str]:
    done = await trio.run_process(
        [*LOADTEST, *args], capture_stdout=True, capture_stderr=True, check=False
    )
    return done.returncode, done.stdout.decode()


async def test_loadtest_reports_sessions_latency_and_the_server() -> None:
    with trio.fail_after(60):
        async with server_process() as (process, address, _):
            status, out = await _loadtest("--server", address, "--sessions", "4")
    assert status == 0, out
    assert re.search(r"sessions ok / failed\s+4 / 0", out), out
    assert re.search(r"chunk latency p50 / p95 / p99\s+[\d.]+ / [\d.]+ / [\d.]+ ms", out), out
    # The server named itself: its process id.
    assert re.search(rf"server \S+/{process.pid}\s+4 sessions \(100 %\)", out), out


async def test_loadtest_finds_a_capacity() -> None:
    with trio.fail_after(120):
        async with server_process() as (_, address, _):
            status, out = await _loadtest(
                *("--server", address, "--manifest", "passthrough", "--realtime"),
                *("--duration", "1", "--sessions", "2", "--max-sessions", "4"),
                *("--find-capacity", "--p99-ms", "1000"),
            )
    assert status == 0, out
    # Passthrough at 50 chunks/s is far within 1 s: the search ends at its limit.
    assert out.rstrip().endswith("capacity: 4 sessions with chunk p99 <= 1000 ms"), out


async def test_loadtest_against_nothing_fails_with_a_message() -> None:
    with trio.fail_after(60):
        status, out = await _loadtest("--server", "127.0.0.1:1", "--sessions", "2")
    assert status == 1
    assert re.search(r"sessions ok / failed\s+0 / 2", out), out
    assert "error: UNAVAILABLE" in out, out
