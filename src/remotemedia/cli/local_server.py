"""A ``remotemedia serve`` child process for the demos: started, awaited, drained."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from remotemedia.errors import RemoteMediaError

__all__ = ["local_server"]

_LISTENING = re.compile(rb"listening on (\S+):(\d+)")
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 15.0


@asynccontextmanager
async def local_server() -> AsyncIterator[str]:
    """Run ``remotemedia serve`` on a free loopback port; yield its ``host:port``.

    On exit the server gets SIGTERM (a graceful drain) and is killed if it has not
    stopped within 15 s; what happened is printed either way.
    """
    # The demo prints each transcript with its latency itself; the server's own line
    # per turn and per session (`--log-level info`) would say it a second time.
    command = [
        *(sys.executable, "-m", "remotemedia", "serve", "--bind", "127.0.0.1:0"),
        *("--log-level", "warning"),
    ]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    try:
        address = await _wait_listening(process)
        print(f"Started `remotemedia serve` (pid {process.pid}), listening on {address}.")
        yield address
    finally:
        await _stop(process)


async def _wait_listening(process: trio.Process) -> str:
    assert process.stdout is not None
    output = b""
    with trio.move_on_after(_START_TIMEOUT):
        while (match := _LISTENING.search(output)) is None:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                break
            output += chunk
        if match is not None:
            return f"{match.group(1).decode()}:{match.group(2).decode()}"
    raise RemoteMediaError(
        f"The server did not start listening within {_START_TIMEOUT:g} s; it printed: "
        f"{output.decode(errors='replace').strip() or 'nothing'}"
    )


async def _stop(process: trio.Process) -> None:
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(_STOP_TIMEOUT):
            code = await process.wait()
            print(f"Stopped the server with SIGTERM; it exited with status {code}.")
            return
        process.kill()
        await process.wait()
        print("The server did not stop within 15 s of SIGTERM and was killed.")
