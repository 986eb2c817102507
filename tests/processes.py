"""Processes in tests: `remotemedia serve` as a real process, and finding our own workers.

Only this test process's descendants count: other suites may run alongside.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import numpy as np
import pytest
import trio

from remotemedia import Audio
from remotemedia.client import open_trio_client
from remotemedia.testing.faults import worker_pids

__all__ = [
    "children_of",
    "free_port",
    "live_stream",
    "parse_listening",
    "reap",
    "require_program",
    "server_process",
    "sigterm_with_live_streams",
    "worker_pids",
]

LISTENING = re.compile(r"listening on (\S+):(\d+).*?(?:metrics at http://\S+:(\d+)/metrics)?;")
SERVE = [sys.executable, "-m", "remotemedia", "serve", "--bind", "127.0.0.1:0"]


def parse_listening(line: str) -> tuple[str, int | None]:
    """The address (and metrics port, if any) from the server's one listening line."""
    match = LISTENING.search(line)
    assert match, f"unexpected first line from the server: {line!r}"
    metrics = int(match.group(3)) if match.group(3) else None
    return f"{match.group(1)}:{match.group(2)}", metrics


@asynccontextmanager
async def server_process(
    *extra: str, bind: str = "127.0.0.1:0", stderr: IO[str] | None = None
) -> AsyncIterator[tuple[trio.Process, str, int | None]]:
    """Start `remotemedia serve` (on a free port unless ``bind`` says where); yield
    (process, address, metrics port). Its standard error goes to ``stderr`` if given
    (a file: a pipe nobody reads would stall the server once full).

    On exit the server is killed if it still runs, and always waited for.
    """
    command = [*SERVE[:-1], bind, *extra]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=stderr)
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(30):
            while b"\n" not in line:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, "the server exited before listening"
                line += chunk
        address, metrics = parse_listening(line.decode())
        yield process, address, metrics
    finally:
        await reap(process)


async def reap(process: trio.Process) -> None:
    """Kill ``process`` if it still runs, wait for it, close its pipes (even when cancelled)."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.kill()
        await process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()


def free_port() -> int:
    """A TCP port on 127.0.0.1 free a moment ago (for a program that takes a fixed port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def require_program(name: str, why: str) -> str:
    """The path of a real system program a test needs; skip without it (fail in CI).

    ``python3 scripts/tasks.py test`` installs it with apt-get when it can; under
    ``CI=true`` nothing may skip, so a missing program fails the test instead.
    """
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        reason = (
            f"{name} is not installed ({why}); `python3 scripts/tasks.py test` installs it as root"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}, and CI must not skip")
        pytest.skip(reason)
    return found


def children_of(pid: int) -> list[int]:
    """The live direct children of a process."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if _parent_of(int(entry)) == pid:
                    found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass  # the process exited while we looked
    return found


def _parent_of(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")".
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


async def live_stream(address: str, opened: trio.Semaphore, reasons: list[str]) -> None:
    """A passthrough stream that sends one chunk, releases ``opened``, then reads until
    the server ends it; the reason of its ``closed`` goes to ``reasons``."""
    async with open_trio_client(address) as client, client.stream("passthrough") as stream:
        await stream.send(Audio(np.zeros(320, np.float32), 16_000))
        opened.release()
        async for _ in stream:
            pass
        assert stream.handle.closed is not None
        reasons.append(stream.handle.closed.reason)


async def sigterm_with_live_streams(process: trio.Process, address: str, count: int) -> list[str]:
    """Open ``count`` live streams, SIGTERM the server once all are open, and return
    the reasons of the ``closed`` each got."""
    reasons: list[str] = []
    opened = trio.Semaphore(0)
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(live_stream, address, opened, reasons)
        for _ in range(count):
            await opened.acquire()
        process.send_signal(signal.SIGTERM)
    return reasons
