"""`remotemedia serve --processes 2`: two server processes on one port, one SIGTERM,
and a parent that supervises them (restarts, gives up, takes them down with it)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import trio

from remotemedia import Audio
from remotemedia.cli import processes
from remotemedia.client import open_trio_client
from tests.processes import SERVE, children_of, sigterm_with_live_streams

pytestmark = pytest.mark.slow

CONNECTIONS = 24
"""Connections opened one after another; the kernel spreads them (a 2^-23 chance that
every one lands on the same process)."""


async def _metrics(url: str) -> bytes:
    host, port = re.match(r"http://([^:]+):(\d+)/", url).groups()  # type: ignore[union-attr]
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        body = b""
        while chunk := await stream.receive_some(65536):
            body += chunk
    return body


def _streams_served(body: bytes) -> int:
    pattern = rb'remotemedia_grpc_requests_total\{method="StreamPipeline",status="success"\} (\S+)'
    match = re.search(pattern, body)
    return int(float(match.group(1))) if match else 0


async def _one_session(address: str) -> None:
    async with open_trio_client(address) as client, client.stream("passthrough") as stream:
        await stream.send(Audio(np.zeros(320, np.float32), 16_000))
        await stream.close()
        async for _ in stream:
            pass


async def test_two_processes_share_the_port_and_one_sigterm_drains_both() -> None:
    command = [*SERVE, "--processes", "2", "--metrics-port", "0", "--drain-timeout", "600"]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    try:
        with trio.fail_after(90):
            assert process.stdout is not None
            line = b""
            while b"\n" not in line:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, "the server exited before listening"
                line += chunk
            text = line.decode()
            assert "2 processes" in text, text
            address = re.search(r"listening on (\S+:\d+)", text).group(1)  # type: ignore[union-attr]
            metrics = re.findall(r"http://\S+?/metrics", text)
            assert len(metrics) == 2, text

            for _ in range(CONNECTIONS):
                await _one_session(address)  # a new connection each time
            served = [_streams_served(await _metrics(url)) for url in metrics]
            assert sum(served) == CONNECTIONS
            assert all(count > 0 for count in served), served

            # A live stream on each process (by connecting until both have one), then
            # one SIGTERM to the parent: both drain and say closed.
            reasons = await sigterm_with_live_streams(process, address, 6)
            assert reasons == ["Server is shutting down"] * 6
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


class _Log:
    """The lines a process writes to a pipe, read as they come (so it never fills)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._seen = 0  # lines before this one were consumed by wait_for
        self._more = trio.Event()

    async def read(self, stream: trio.abc.ReceiveStream) -> None:
        pending = b""
        while chunk := await stream.receive_some(65536):
            *complete, pending = (pending + chunk).split(b"\n")
            self.lines += [line.decode(errors="replace") for line in complete]
            self._more.set()
            self._more = trio.Event()

    async def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The next line (after the last one matched) that matches ``pattern``."""
        with trio.move_on_after(timeout):
            while True:
                for index in range(self._seen, len(self.lines)):
                    if match := re.search(pattern, self.lines[index]):
                        self._seen = index + 1
                        return match
                self._seen = len(self.lines)
                await self._more.wait()
        raise AssertionError(f"no line matching {pattern!r} in {timeout:g} s:\n" + self.log)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


class _Supervised:
    """`remotemedia serve --processes 2` started by a test, with its stderr read."""

    def __init__(self, process: trio.Process, line: str, log: _Log) -> None:
        self.process = process
        self.log = log
        self.address = re.search(r"listening on (\S+:\d+)", line).group(1)  # type: ignore[union-attr]
        pids = re.search(r"pids (\d+) (\d+)", line)
        assert pids, line
        self.pids = [int(pids.group(1)), int(pids.group(2))]
        self.seen = set(self.pids)  # every server process pid, to clean up after


@contextlib.asynccontextmanager
async def _supervised(*extra: str) -> AsyncIterator[_Supervised]:
    """Start `serve --processes 2`; on exit kill it and any server process left."""
    command = [*SERVE, "--processes", "2", *extra]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    server: _Supervised | None = None
    log = _Log()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.read, process.stderr)
            line = b""
            with trio.fail_after(60):
                while b"\n" not in line:
                    chunk = await process.stdout.receive_some(4096)
                    assert chunk, "the server exited before listening:\n" + log.log
                    line += chunk
            server = _Supervised(process, line.decode(), log)
            yield server
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            for pid in server.seen if server else ():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # an orphan (the bug this file tests)
            await process.stdout.aclose()
            await process.stderr.aclose()


async def _exited(pid: int) -> None:
    """Wait until ``pid`` (any process, not only a child of ours) has exited."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


def _reaped(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def test_processes_restart_a_killed_server_process_on_the_same_port() -> None:
    async with _supervised("--metrics-port", "0") as server:
        with trio.fail_after(90):
            killed, other = server.pids
            os.kill(killed, signal.SIGKILL)
            await server.log.wait_for(
                rf"server process {killed} stopped unexpectedly \(it was killed by SIGKILL\); "
                r"restarting it in 0.1 s"
            )
            match = await server.log.wait_for(
                rf"server process {killed} restarted as (\d+), metrics at (\S+)"
            )
            new, metrics = int(match.group(1)), match.group(2)
            server.seen.add(new)
            # The killed one was waited for (no zombie left among the children).
            assert sorted(children_of(server.process.pid)) == sorted([other, new])
            # The new one listens on the same port: the kernel gives it connections.
            for _ in range(CONNECTIONS):
                await _one_session(server.address)
            assert _streams_served(await _metrics(metrics)) > 0

            # A crash that was restarted is logged, not reported at a clean stop.
            server.process.send_signal(signal.SIGTERM)
            assert await server.process.wait() == 0
            assert all(_reaped(pid) for pid in server.seen)


async def test_processes_end_when_their_parent_is_killed() -> None:
    async with _supervised() as server:
        with trio.fail_after(60):
            server.process.kill()
            await server.process.wait()
            for pid in server.pids:
                await _exited(pid)
            host, port = server.address.rsplit(":", 1)
            with trio.socket.socket() as sock, pytest.raises(ConnectionRefusedError):
                await sock.connect((host, int(port)))  # nobody listens on the port any more


async def test_processes_give_up_on_server_processes_that_keep_dying() -> None:
    limit, window = processes.CRASH_LIMIT, processes.CRASH_WINDOW
    async with _supervised() as server:
        with trio.fail_after(120):
            victim, other = server.pids
            for _ in range(limit - 1):
                os.kill(victim, signal.SIGKILL)
                match = await server.log.wait_for(rf"server process {victim} restarted as (\d+)")
                victim = int(match.group(1))
                server.seen.add(victim)
            os.kill(victim, signal.SIGKILL)
            await server.log.wait_for(
                rf"error: server process {victim} stopped unexpectedly \(it was killed by "
                rf"SIGKILL\), the {limit}th time within {window:g} s: stopping the server"
            )
            assert await server.process.wait() == 1
            assert _reaped(other)  # the healthy one was stopped and waited for too
            assert all(_reaped(pid) for pid in server.seen)


async def test_processes_report_a_server_process_killed_while_draining() -> None:
    # --drain-delay keeps both server processes taking sessions after the SIGTERM,
    # so one can be killed mid-drain whatever the scheduling.
    async with _supervised("--drain-delay", "600") as server:
        with trio.fail_after(60):
            server.process.send_signal(signal.SIGTERM)
            for _ in server.pids:
                await server.log.wait_for(r"SIGTERM: draining")
            killed = server.pids[0]
            os.kill(killed, signal.SIGKILL)
            server.process.send_signal(signal.SIGTERM)  # the other: stop now
            assert await server.process.wait() == 128 + signal.SIGKILL
            await server.log.wait_for(
                rf"error: server process {killed} did not stop cleanly: it was killed by SIGKILL"
            )
            assert all(_reaped(pid) for pid in server.pids)


async def test_server_process_whose_parent_is_gone_refuses_to_serve() -> None:
    # Pid 1 is not its parent: as if the parent died before the child could ask to
    # die with it, and the child was handed to init.
    env = {**os.environ, processes.PARENT_ENV: "1"}
    with trio.fail_after(60):
        result = await trio.run_process(
            [*SERVE, "--reuse-port"], env=env, capture_stderr=True, check=False
        )
    assert result.returncode == 1
    assert (
        "error: The `serve --processes` parent (pid 1) exited before this server process "
        "started; not serving."
    ) in result.stderr.decode()
