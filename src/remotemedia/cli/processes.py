"""``remotemedia serve --processes N``: N server processes on one port, supervised.

Each child is a whole ``remotemedia serve`` (its own Trio run, limits, worker
namespace and metrics port) listening with SO_REUSEPORT on the same address; the
kernel spreads new connections over them. This parent starts them, reports one
listening line, restarts the ones that die, forwards SIGINT/SIGTERM (so one SIGTERM
drains them all) and exits with a status that says how they ended.

Rules:

1. Port 0 is resolved here first (a socket bound with SO_REUSEPORT holds the port
   until every child listens), so every child gets the same port.
2. ``--metrics-port P`` gives child *i* the port P + i (one scrape target per
   process; Prometheus sums them); ``--metrics-port 0`` lets each pick one. A
   restarted child gets the same command, so the same port and metrics port.
3. A child that exits before listening at startup stops the others: the server is
   all or none.
4. A child that exits while no shutdown was asked for is logged (pid and how it
   ended) and restarted after 0.1, 0.2, 0.4 s, ... (the worker restart ladder,
   climbed by recent crashes). The ``CRASH_LIMIT``-th crash of any child within
   ``CRASH_WINDOW`` seconds means the server cannot stay up: every child gets
   SIGTERM, then SIGKILL after ``STOP_GRACE`` seconds, and the parent exits 1.
5. Children die with the parent: each asks Linux for SIGTERM when the parent dies
   (:func:`follow_parent`), so a parent killed with SIGKILL leaves no orphans
   serving the port; they drain as if the parent had forwarded a SIGTERM.
6. Exit status: 0 when the children drained and exited 0 after SIGINT/SIGTERM to
   the parent, even if some had crashed and been restarted before (each crash is
   logged; a clean stop is not a failure to a supervisor such as systemd); 1 when
   the parent gave up (rule 4); otherwise the worst status of a child stopping, a
   child killed by signal N counting as 128 + N (as a shell reports it).
7. Every child is waited for, whatever ends the parent, and its stdout is read
   until it exits, so it never blocks on a full pipe.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, MutableMapping, Sequence

import attrs
import trio

from remotemedia.cli.say import say
from remotemedia.config import ConfigError
from remotemedia.executors.child import ChildProcess, describe_exit, die_with_parent
from remotemedia.executors.supervision import RestartPolicy

__all__ = [
    "CRASH_LIMIT",
    "CRASH_WINDOW",
    "PARENT_ENV",
    "STOP_GRACE",
    "follow_parent",
    "run_processes",
]

CRASH_LIMIT = 5
"""Crashes of children within ``CRASH_WINDOW`` after which the parent gives up."""
CRASH_WINDOW = 60.0
"""Seconds a crash counts against ``CRASH_LIMIT``."""
STOP_GRACE = 10.0
"""Seconds children get to drain after the parent gives up, before SIGKILL."""
PARENT_ENV = "REMOTEMEDIA_SERVE_PARENT"
"""Set in a child's environment to the parent's pid: "die with this process"."""

_LISTENING = re.compile(r"listening on \S+ \((.*); pid (\d+)\)")
_METRICS = re.compile(r"metrics at (\S+)")
_OWN_FLAGS = ("--processes", "--bind", "--metrics-port")
_RESTARTS = RestartPolicy()


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


def follow_parent(env: MutableMapping[str, str]) -> None:
    """In a child of ``serve --processes``: die when the parent dies (rule 5).

    The parent names itself in ``PARENT_ENV``; without it this does nothing. The
    variable is removed, so the server's own workers do not inherit it.

    SIGTERM, not SIGKILL: with its parent gone the child drains like an operator's
    SIGTERM would have it (no new sessions, live ones get ``--drain-timeout``), and
    stops its workers and removes their shared memory. The parent started the child
    from its Trio thread (:class:`ChildProcess`), which lives as long as the parent,
    so the signal comes when the process dies, not when some thread does.

    Raises:
        ConfigError: The parent died before this process asked to follow it.
    """
    parent = env.pop(PARENT_ENV, None)
    if parent is None:
        return
    die_with_parent(signal.SIGTERM)
    # The parent may have died before prctl ran: the request then never fires, and
    # this process has been handed to another parent already.
    if os.getppid() != int(parent):
        raise ConfigError(
            f"The `serve --processes` parent (pid {parent}) exited before this server "
            "process started; not serving."
        )


async def run_processes(
    count: int, host: str, port: int, metrics_port: int | None, argv: Sequence[str]
) -> int:
    """Run ``count`` supervised server processes on ``host:port`` until they stop.

    Returns:
        The exit status of rule 6.

    Raises:
        ConfigError: The port cannot be bound, or a child exited before listening
            at startup (rule 3).
    """
    holder = reserve_port(host, port)
    port = holder.getsockname()[1]
    base = [sys.executable, "-m", "remotemedia", "serve", *child_arguments(argv)]
    commands = []
    for index in range(count):
        command = [*base, "--bind", f"{host}:{port}", "--reuse-port"]
        if metrics_port is not None:
            command += ["--metrics-port", str(metrics_port + index if metrics_port else 0)]
        commands.append(command)
    supervisor = _Supervisor(commands)
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            lines = []
            for index in range(count):
                child = supervisor.start(index)
                line = await child.first_line()
                if line is None:
                    raise ConfigError(
                        f"A server process exited before listening (status "
                        f"{await child.wait()}); see its error above."
                    )
                lines.append(line)
            holder.close()  # every child listens: the port is held by them now
            print(_listening(host, port, lines), flush=True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(supervisor.forward, signals)
                async with trio.open_nursery() as supervising:
                    for index in range(count):
                        supervising.start_soon(supervisor.supervise, index, nursery.cancel_scope)
                nursery.cancel_scope.cancel()  # every child has stopped: stop forwarding
    finally:
        holder.close()
        with trio.CancelScope(shield=True):
            await _stop_all(list(supervisor.children.values()))
    return supervisor.status


@attrs.define(eq=False)
class _Child:
    """One server process, the read end of its stdout, and whether it listens yet."""

    process: ChildProcess
    output: trio.lowlevel.FdStream
    listening: bool = False

    @classmethod
    def spawn(cls, command: list[str]) -> _Child:
        """Start ``command`` with its stdout on a pipe to us (rule 5: it follows us)."""
        reader, writer = os.pipe()
        try:
            process = ChildProcess(
                command, pass_fds=[], environment={PARENT_ENV: str(os.getpid())}, stdout=writer
            )
        except BaseException:
            os.close(reader)
            raise
        finally:
            os.close(writer)
        return cls(process, trio.lowlevel.FdStream(reader))

    async def first_line(self) -> str | None:
        """Its listening line, or None if it exited before printing one."""
        data = b""
        while b"\n" not in data:
            chunk = await self.output.receive_some(4096)
            if not chunk:
                return None
            data += chunk
        self.listening = True
        return data.decode().splitlines()[0]

    async def wait(self) -> int:
        """Wait for it to exit, reading its stdout meanwhile (rule 7); its status."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_copy_to_stdout, self.output)
            code = await self.process.wait()
            nursery.cancel_scope.cancel()  # a worker may hold the pipe open a while
        await self.output.aclose()
        return code


@attrs.define
class _Crashes:
    """Rule 4: when the children's crashes mean giving up, else how long to pause."""

    times: list[float] = attrs.Factory(list)

    def record(self, now: float) -> float | None:
        """Count a crash at ``now``: the pause before the restart, or None to give up."""
        self.times = [time for time in self.times if now - time < CRASH_WINDOW] + [now]
        if len(self.times) >= CRASH_LIMIT:
            return None
        _, pause = next(_RESTARTS.attempts(failures_in_row=len(self.times)))
        return pause


@attrs.define(eq=False)
class _Supervisor:
    """The children by slot, and what their exits mean (rules 4 and 6)."""

    commands: list[list[str]]
    children: dict[int, _Child] = attrs.Factory(dict)
    stopping: trio.Event = attrs.Factory(trio.Event)  # asked to stop: exits are expected
    status: int = 0
    crashes: _Crashes = attrs.Factory(_Crashes)

    def start(self, index: int) -> _Child:
        """Start slot ``index``'s server process (again, after a crash)."""
        child = self.children[index] = _Child.spawn(self.commands[index])
        return child

    async def forward(self, signals: AsyncIterator[int]) -> None:
        """Pass each SIGINT/SIGTERM on to every child, as SIGTERM."""
        async for _ in signals:
            self.stopping.set()
            for child in self.children.values():
                # A server takes SIGINT and SIGTERM alike (drain, then stop at once
                # on the second). One still starting never served: end it now.
                if child.listening:
                    child.process.terminate()
                else:
                    child.process.kill()

    async def supervise(self, index: int, server: trio.CancelScope) -> None:
        """Wait for slot ``index``'s process to exit; restart it unless stopping (rule 4)."""
        child = self.children[index]
        while True:
            code = await child.wait()
            if self.stopping.is_set():
                if child.listening and code:  # one killed while starting never served
                    what = f"server process {child.process.pid} did not stop cleanly"
                    _log(f"error: {what}: {describe_exit(code)}")
                    self.status = max(self.status, _exit_status(code))
                return
            what = f"server process {child.process.pid} " + (
                "stopped unexpectedly" if child.listening else "exited before listening"
            )
            pause = self.crashes.record(trio.current_time())
            if pause is None:
                _log(
                    f"error: {what} ({describe_exit(code)}), the {CRASH_LIMIT}th time within "
                    f"{CRASH_WINDOW:g} s: stopping the server"
                )
                self.status = 1
                server.cancel()
                return
            _log(f"{what} ({describe_exit(code)}); restarting it in {pause:g} s")
            await trio.sleep(pause)
            if self.stopping.is_set():
                return
            gone, child = child, self.start(index)
            line = await child.first_line()
            if line is not None:
                found = _METRICS.search(line)
                metrics = f", metrics at {found.group(1)}" if found else ""
                _log(f"server process {gone.process.pid} restarted as {child.process.pid}{metrics}")


async def _stop_all(children: list[_Child]) -> None:
    """SIGTERM to every live child, SIGKILL after ``STOP_GRACE`` s; reap all (rule 7)."""
    for child in children:
        child.process.terminate()  # a no-op for one already reaped
    with trio.move_on_after(STOP_GRACE):
        for child in children:
            await child.process.wait()
    for child in children:
        child.process.kill()
        await child.process.wait()
        await child.output.aclose()


async def _copy_to_stdout(output: trio.lowlevel.FdStream) -> None:
    # A child prints only its listening line to stdout; anything after it is
    # passed on rather than left to fill the pipe and block the child.
    while chunk := await output.receive_some(65536):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()


def _exit_status(code: int) -> int:
    """A child's status as a shell reports it: killed by signal N is 128 + N."""
    return 128 - code if code < 0 else code


def _log(message: str) -> None:
    say(f"remotemedia serve: {message}")


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
