"""The native transport's HTTP/2 rules, driven by a raw h2 client over a real socket.

What no well-behaved gRPC client does (ping floods, rapid resets, silence under
keepalive) and what gRPC itself specifies (deadlines, unknown methods, health,
trailers-only errors), checked frame by frame.
"""

from __future__ import annotations

import contextlib
import logging

import h2.events
import h2.exceptions
import pytest
import trio
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from h2.errors import ErrorCodes

from remotemedia.transport.h2_connection import MAX_PING_STRIKES, Connection
from remotemedia.transport.http2 import RESET_BURST
from remotemedia.transport.serving import ServerAddress
from tests.e2e.conftest import TIMEOUT, TOKEN, ServerFactory, assert_serves, init
from tests.e2e.raw_h2 import HEALTH_CHECK, HEALTH_WATCH, STREAMING, raw_client

pytestmark = pytest.mark.parametrize("transport", ["native"])


async def test_ping_flood_gets_goaway_enhance_your_calm_and_one_log_line(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    address = await start_server()
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.INFO, "remotemedia.transport"):
        async with raw_client(address) as client:
            for index in range(MAX_PING_STRIKES + 100):  # all in one write
                client.h2.ping(index.to_bytes(8, "big"))
            await client.flush()
            goaway = await client.until(h2.events.ConnectionTerminated)
            assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
            assert goaway.additional_data == b"too_many_pings"
    lines = [r.getMessage() for r in caplog.records if "pinged too often" in r.getMessage()]
    assert len(lines) == 1, lines


async def test_a_few_pings_are_answered(start_server: ServerFactory) -> None:
    address = await start_server()
    with trio.fail_after(TIMEOUT):
        async with raw_client(address) as client:
            client.h2.ping(b"12345678")
            await client.flush()
            ack = await client.until(h2.events.PingAckReceived)
            assert ack.ping_data == b"12345678"


async def test_rapid_reset_gets_goaway_enhance_your_calm(start_server: ServerFactory) -> None:
    address = await start_server()
    with trio.fail_after(TIMEOUT):
        async with raw_client(address) as client, trio.open_nursery() as nursery:

            async def reset_streams() -> None:
                # The burst, then more than the sustained rate allows, until the GOAWAY.
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, h2.exceptions.ProtocolError
                ):
                    for _ in range(int(RESET_BURST) // 100 + 1000):
                        for _ in range(100):
                            client.h2.reset_stream(client.request(HEALTH_WATCH))
                        await client.flush()

            nursery.start_soon(reset_streams)
            goaway = await client.until(h2.events.ConnectionTerminated, answer=None)
            nursery.cancel_scope.cancel()
            assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
            assert goaway.additional_data == b"too_many_resets"


async def test_silent_connection_is_pinged_then_closed(start_server: ServerFactory) -> None:
    address = await start_server(keepalive_interval=0.2, keepalive_timeout=0.3)
    with trio.fail_after(TIMEOUT):
        async with raw_client(address) as client:
            await client.watch()
            ping = await client.until(h2.events.PingReceived, answer=False)
            assert ping.ping_data
            while not client.closed:  # never answered: the server gives up on us
                await client.read(answer=False)


async def test_answered_keepalive_pings_keep_the_connection(start_server: ServerFactory) -> None:
    address = await start_server(keepalive_interval=0.1, keepalive_timeout=0.3)
    with trio.fail_after(TIMEOUT):
        async with raw_client(address) as client:
            await client.watch()
            for _ in range(5):  # 5 pings over > 0.5 s, each answered
                await client.until(h2.events.PingReceived)
            assert not client.closed


async def test_grpc_timeout_ends_a_call_with_deadline_exceeded(
    start_server: ServerFactory,
) -> None:
    address = await start_server()
    with trio.fail_after(TIMEOUT):
        async with raw_client(address) as client:
            stream_id = client.request(STREAMING, headers={"grpc-timeout": "200m"})
            client.message(stream_id, init().SerializeToString())
            await client.flush()  # the session starts, and the client says no more
            trailers = await client.ended(stream_id)
            assert trailers["grpc-status"] == "4", trailers


async def _ending(address: ServerAddress, path: str, **headers: str) -> dict[str, str]:
    """Open a call with these headers, send nothing more; the headers that end it."""
    with trio.fail_after(TIMEOUT):
        async with raw_client(address) as client:
            stream_id = client.request(path, headers=headers)
            await client.flush()
            return await client.ended(stream_id)


async def test_malformed_grpc_timeout_is_invalid_argument(start_server: ServerFactory) -> None:
    trailers = await _ending(await start_server(), STREAMING, **{"grpc-timeout": "soon"})
    assert trailers["grpc-status"] == "3"
    assert "grpc-timeout" in trailers["grpc-message"]


async def test_unknown_method_is_unimplemented_trailers_only(start_server: ServerFactory) -> None:
    headers = await _ending(await start_server(), "/remotemedia.v1.Nope/Nothing")
    assert headers[":status"] == "200"  # trailers-only: one HEADERS frame
    assert headers["grpc-status"] == "12"
    assert "/remotemedia.v1.Nope/Nothing" in headers["grpc-message"]


async def test_compressed_call_is_unimplemented(start_server: ServerFactory) -> None:
    trailers = await _ending(await start_server(), STREAMING, **{"grpc-encoding": "gzip"})
    assert trailers["grpc-status"] == "12"


async def test_health_requires_the_token_when_configured(start_server: ServerFactory) -> None:
    address = await start_server(tokens=[TOKEN], exempt_health=False)
    with trio.fail_after(TIMEOUT):
        async with raw_client(address) as client:
            refused = client.request(HEALTH_CHECK)
            client.message(refused, HealthCheckRequest().SerializeToString(), end=True)
            allowed = client.request(HEALTH_CHECK, headers={"authorization": f"Bearer {TOKEN}"})
            client.message(allowed, HealthCheckRequest().SerializeToString(), end=True)
            await client.flush()
            assert (await client.ended(refused))["grpc-status"] == "16"
            assert (await client.ended(allowed))["grpc-status"] == "0"


async def test_health_watch_reports_not_serving_when_the_server_drains(
    start_server: ServerFactory,
) -> None:
    shutdown = trio.Event()
    address = await start_server(shutdown=shutdown)
    with trio.fail_after(TIMEOUT):
        async with raw_client(address) as client:
            stream_id = await client.watch("remotemedia.v1.StreamingPipelineService")
            statuses = []
            while len(statuses) < 2:
                event = await client.until(h2.events.DataReceived)
                client.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
                statuses.append(HealthCheckResponse.FromString(event.data[5:]).status)
                if len(statuses) == 1:
                    shutdown.set()
            assert statuses == [HealthCheckResponse.SERVING, HealthCheckResponse.NOT_SERVING]


async def test_health_check_of_an_unknown_service_is_not_found(
    start_server: ServerFactory,
) -> None:
    address = await start_server()
    with trio.fail_after(TIMEOUT):
        async with raw_client(address) as client:
            stream_id = client.request(HEALTH_CHECK)
            client.message(
                stream_id, HealthCheckRequest(service="nope").SerializeToString(), end=True
            )
            await client.flush()
            assert (await client.ended(stream_id))["grpc-status"] == "5"


async def test_a_connection_that_fails_unexpectedly_takes_only_itself_down(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = await start_server()
    original = Connection._read_loop
    failed = trio.Event()

    async def fail_once(self: Connection) -> None:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("a bug in one connection")
        await original(self)

    monkeypatch.setattr(Connection, "_read_loop", fail_once)
    with trio.fail_after(TIMEOUT):
        async with raw_client(address) as client:
            await failed.wait()
            with contextlib.suppress(trio.BrokenResourceError):  # closed, or reset
                assert await client.socket.receive_some(65536) == b""
        await assert_serves(address)  # the server itself goes on
