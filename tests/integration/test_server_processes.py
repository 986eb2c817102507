"""`remotemedia serve --processes 2`: two server processes on one port, one SIGTERM."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
import trio

from remotemedia import Audio
from remotemedia.client import open_trio_client
from tests.processes import SERVE, sigterm_with_live_streams

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
