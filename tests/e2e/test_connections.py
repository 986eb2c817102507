"""Connection rules: protocol violations, silent connections and too many connections
all get GOAWAY and a closed socket, and the server goes on serving."""

from __future__ import annotations

import random
import struct

import trio

from remotemedia.transport.serving import ServerAddress
from tests.e2e.conftest import TIMEOUT, ServerFactory, assert_serves

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = struct.pack(">I", 4)[1:] + b"\x04\x00" + struct.pack(">I", 0)  # len 0, SETTINGS
GOAWAY = 0x7
REFUSED_STREAM = 0x7


async def _connect(address: ServerAddress) -> trio.SocketStream:
    return await trio.open_tcp_stream(address.host, address.port)


async def _until_closed(stream: trio.SocketStream) -> list[tuple[int, bytes]]:
    """Read until the server closes the connection; its frames as (type, payload)."""
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    frames = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        frames.append((data[3], data[9 : 9 + length]))
        data = data[9 + length :]
    return frames


def _goaway_code(frames: list[tuple[int, bytes]]) -> int:
    (payload,) = [payload for kind, payload in frames if kind == GOAWAY]
    code: int = struct.unpack(">I", payload[4:8])[0]
    return code


async def test_connection_sending_garbage_after_the_preface_gets_goaway(
    server: ServerAddress,
) -> None:
    garbage = random.Random(7).randbytes(4096)
    with trio.fail_after(TIMEOUT):
        async with await _connect(server) as stream:
            await stream.send_all(PREFACE + EMPTY_SETTINGS + garbage)
            frames = await _until_closed(stream)
        assert _goaway_code(frames) != 0  # an error code (h2 picks the precise one)
        await assert_serves(server)


async def test_connection_that_sends_nothing_is_closed_after_the_handshake_timeout(
    start_server: ServerFactory,
) -> None:
    server = await start_server(handshake_timeout=0.5)
    with trio.fail_after(TIMEOUT):
        async with await _connect(server) as silent, await _connect(server) as no_request:
            await no_request.send_all(PREFACE + EMPTY_SETTINGS)
            assert await _until_closed(silent) is not None
            assert _goaway_code(await _until_closed(no_request)) == 0
        await assert_serves(server)


async def test_connection_over_max_connections_gets_goaway(start_server: ServerFactory) -> None:
    server = await start_server(max_connections=2)
    with trio.fail_after(TIMEOUT):
        async with await _connect(server) as first, await _connect(server) as second:
            await first.send_all(PREFACE + EMPTY_SETTINGS)
            await second.send_all(PREFACE + EMPTY_SETTINGS)
            async with await _connect(server) as third:
                await third.send_all(PREFACE + EMPTY_SETTINGS)
                assert _goaway_code(await _until_closed(third)) == REFUSED_STREAM
        # Both held connections are gone: a new one is served.
        await assert_serves(server)
