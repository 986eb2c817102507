"""``remotemedia serve --processes N``: N server processes on one port.

Each child is a whole ``remotemedia serve`` (its own Trio run, limits, worker
namespace and metrics port) listening with SO_REUSEPORT on the same address; the
kernel spreads new connections over them. This parent only starts them, reports one
listening line, forwards SIGINT/SIGTERM (so one SIGTERM drains them all) and exits
with the worst exit status.

Rules:

1. Port 0 is resolved here first (a socket bound with SO_REUSEPORT holds the port
   until every child listens), so every child gets the same port.
2. ``--metrics-port P`` gives child *i* the port P + i (one scrape target per
   process; Prometheus sums them); ``--metrics-port 0`` lets each pick one.
3. A child that exits before listening stops the others: the server is all or none.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

import trio

from remotemedia.config import ConfigError

__all__ = ["run_processes"]

_LISTENING = re.compile(r"listening on \S+ \((.*); pid (\d+)\)")
_METRICS = re.compile(r"metrics at (\S+)")
_OWN_FLAGS = ("--processes", "--bind", "--metrics-port")


def child_arguments(argv: Sequence[str]) -> list[str]:
    """``serve``'s arguments without the flags this parent sets for each child."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _OWN_FLAGS:
            skip = "=" not in arg
            continue
        kept.append(arg)
    return kept


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound with SO_REUSEPORT to ``host:port`` (port 0: a free one), not listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, port))
    except OSError as error:
        holder.close()
        raise ConfigError(f"Cannot listen on {host}:{port}: {error.strerror or error}.") from None
    return holder


async def run_processes(
    count: int, host: str, port: int, metrics_port: int | None, argv: Sequence[str]
) -> int:
    """Run ``count`` server processes on ``host:port`` until they all exit; the worst status."""
    holder = reserve_port(host, port)
    port = holder.getsockname()[1]
    base = [sys.executable, "-m", "remotemedia", "serve", *child_arguments(argv)]
    children: list[trio.Process] = []
    status = 0
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                lines = []
                for index in range(count):
                    command = [*base, "--bind", f"{host}:{port}", "--reuse-port"]
                    if metrics_port is not None:
                        chosen = metrics_port + index if metrics_port else 0
                        command += ["--metrics-port", str(chosen)]
                    child = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
                    children.append(child)
                    lines.append(await _first_line(child))
                holder.close()  # every child listens: the port is held by them now
                print(_listening(host, port, lines), flush=True)

                async def forward() -> None:
                    async for signum in signals:
                        for child in children:
                            if child.returncode is None:
                                child.send_signal(signum)

                nursery.start_soon(forward)
                for child in children:
                    status = max(status, await child.wait())
                nursery.cancel_scope.cancel()
    finally:
        holder.close()
        for child in children:
            if child.returncode is None:
                child.kill()
            with trio.CancelScope(shield=True):
                await child.wait()
            if child.stdout is not None:
                with contextlib.suppress(trio.ClosedResourceError):
                    await child.stdout.aclose()
    return status


async def _first_line(child: trio.Process) -> str:
    """The child's listening line (rule 3: none means the whole server fails)."""
    assert child.stdout is not None
    data = b""
    while b"\n" not in data:
        chunk = await child.stdout.receive_some(4096)
        if not chunk:
            raise ConfigError(
                f"A server process exited before listening (status {await child.wait()}); "
                "see its error above."
            )
        data += chunk
    return data.decode().splitlines()[0]


def _listening(host: str, port: int, lines: list[str]) -> str:
    pids = []
    metrics = []
    for line in lines:
        match = _LISTENING.search(line)
        if match:
            pids.append(match.group(2))
            found = _METRICS.search(match.group(1))
            if found:
                metrics.append(found.group(1))
    where = f", metrics at {' '.join(metrics)}" if metrics else ""
    return (
        f"remotemedia serve: listening on {host}:{port} (gRPC remotemedia.v1, "
        f"{len(lines)} processes, pids {' '.join(pids)}{where});"
    )
