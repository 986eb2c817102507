"""Streams sharing one HTTP/2 connection are isolated from each other's backpressure.

A load balancer multiplexes many clients onto few backend connections, so one
client that stops reading must never stall the others on its connection.
"""

from __future__ import annotations

import contextlib
from typing import Any

import trio
import trio.testing
from grpclib.config import Configuration

from remotemedia.transport.http2 import CONNECTION_WINDOW, STREAM_WINDOW
from remotemedia.transport.serving import ServerAddress
from remotemedia.v1 import execution_grpc
from remotemedia.v1 import execution_pb2 as epb
from tests.e2e.conftest import (
    CLOSE,
    TIMEOUT,
    RawStream,
    ServerFactory,
    aio,
    assert_serves,
    binary_buffer,
    chunk,
    control,
    flood,
    open_channel,
    open_raw_stream,
)

KILOBYTE = 1 << 10
MEGABYTE = 1 << 20
CLIENT_WINDOWS = Configuration(
    http2_connection_window_size=64 * MEGABYTE, http2_stream_window_size=64 * KILOBYTE
)
"""grpclib's client holds a stream's unread responses against its connection window
too: a larger connection window keeps the client's own side from stalling, so the
test sees only the server's flow control."""
NORMAL_TIME = 5.0
"""Seconds a small session may take while another stream on its connection is stalled."""


def _send_window(stream: RawStream) -> int:
    """What the server still lets this stream send (its HTTP/2 flow-control window)."""
    raw: Any = stream.stream._stream
    window: int = raw._h2_connection.local_flow_control_window(raw.id)
    return window


async def _wait_stalled(floods: list[tuple[RawStream, list[int]]]) -> None:
    """Wait until every flood is stuck: out of window, and client and server quiet.

    Client and server run in this Trio run, so "every task is blocked" means the
    server has stopped reading the floods (their sessions' buffers are full).
    """
    while not all(sent and _send_window(stream) <= 0 for stream, sent in floods):
        await trio.testing.wait_all_tasks_blocked(0.05)


async def test_flow_control_stalled_streams_leave_their_connection_usable(
    start_server: ServerFactory,
) -> None:
    # More stalled streams than the connection window has room for their windows:
    # only returning connection credit as data arrives keeps the connection open.
    count = CONNECTION_WINDOW // STREAM_WINDOW + 2
    server = await start_server(max_sessions=count + 1, max_session_buffer_bytes=MEGABYTE)
    with trio.fail_after(TIMEOUT):
        async with (
            open_channel(server, CLIENT_WINDOWS) as channel,
            trio.open_nursery() as nursery,
            contextlib.AsyncExitStack() as stack,
        ):
            floods = []
            for _ in range(count):
                stream = await stack.enter_async_context(open_raw_stream(channel))
                floods.append((stream, []))
                nursery.start_soon(flood, stream, 64 * KILOBYTE, floods[-1][1])
            await _wait_stalled(floods)

            with trio.fail_after(NORMAL_TIME):
                # A new stream on the same connection gets its init, results and
                # `closed` ...
                async with open_raw_stream(channel) as other:
                    await other.open_session()
                    await other.send(chunk(binary_buffer(1000), 0))
                    await other.send(control(CLOSE), end=True)
                    kinds = [r.WhichOneof("response") for r in await other.recv_all()]
                    assert kinds == ["result", "closed"]
                    await other.finish()
                # ... and so does a unary call on the same connection.
                stub = execution_grpc.PipelineExecutionServiceStub(channel)
                version = await aio(stub.GetVersion)(epb.VersionRequest(client_version="v1"))
                assert version.compatible
            # The floods are still stalled, not failed.
            assert all(_send_window(stream) <= 0 for stream, _ in floods)
            nursery.cancel_scope.cancel()
        await assert_serves(server)


async def test_flow_control_large_message_crosses_small_stream_window(
    server: ServerAddress,
) -> None:
    """A message many times the stream window arrives whole (credit flows as it is read)."""
    with trio.fail_after(TIMEOUT):
        async with open_channel(server) as channel, open_raw_stream(channel) as stream:
            await stream.open_session()
            await stream.send(chunk(binary_buffer(8 * MEGABYTE), 0))
            await stream.send(control(CLOSE), end=True)
            responses = await stream.recv_all()
            assert [r.WhichOneof("response") for r in responses] == ["result", "closed"]
            echoed = responses[0].result.data_outputs["pass"].binary.data
            assert len(echoed) == 8 * MEGABYTE
            await stream.finish()
