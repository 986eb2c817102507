"""Bearer-token auth on every RPC, and the server's enforced limits."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import numpy as np
import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import StreamTerminatedError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from remotemedia.transport.serving import ServerAddress
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_grpc
from remotemedia.v1 import execution_pb2 as epb
from tests.e2e.conftest import (
    CLOSE,
    TIMEOUT,
    TOKEN,
    ServerFactory,
    aio,
    assert_serves,
    audio_buffer,
    chunk,
    control,
    expect_stream_error,
    grpc_error,
    init,
    json_buffer,
    kind,
    manifest,
    open_channel,
    raw_stream,
    sample,
    scrape,
    text_buffer,
)

MISSING = "Missing authorization header. Include 'authorization: Bearer <token>' in gRPC metadata."
BAD_FORMAT = "Invalid authorization format. Expected 'Bearer <token>'"
BAD_TOKEN = "Invalid API token. Check your authentication credentials."

BAD_CREDENTIALS = [
    pytest.param(None, MISSING, id="missing"),
    pytest.param({"authorization": "Token abc"}, BAD_FORMAT, id="bad-format"),
    pytest.param({"authorization": "Bearer wrong-token"}, BAD_TOKEN, id="bad-token"),
]
GOOD = {"authorization": f"Bearer {TOKEN}"}
CALC = manifest([("calc", "CalculatorNode")])


def execute_request() -> epb.ExecuteRequest:
    return epb.ExecuteRequest(
        manifest=CALC,
        data_inputs={"calc": json_buffer({"operation": "add", "operands": [2, 3]})},
        client_version="v1",
    )


@pytest.fixture
async def auth_server(start_server: ServerFactory) -> ServerAddress:
    return await start_server(tokens=[TOKEN, "another-token"])


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(("metadata", "message"), BAD_CREDENTIALS)
async def test_auth_stream_pipeline_rejected(
    auth_server: ServerAddress, metadata: Mapping[str, str] | None, message: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_stream(auth_server, metadata) as stream:
            with contextlib.suppress(StreamTerminatedError):  # refused before it went out
                await stream.send(init())
            error = await grpc_error(stream.recv())
    assert error.status is Status.UNAUTHENTICATED
    assert error.message == message


@pytest.mark.parametrize(("metadata", "message"), BAD_CREDENTIALS)
async def test_auth_execute_pipeline_rejected(
    auth_server: ServerAddress, metadata: Mapping[str, str] | None, message: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_channel(auth_server) as channel:
            stub = execution_grpc.PipelineExecutionServiceStub(channel)
            error = await grpc_error(
                aio(stub.ExecutePipeline)(execute_request(), metadata=metadata)
            )
    assert error.status is Status.UNAUTHENTICATED
    assert error.message == message


@pytest.mark.parametrize(("metadata", "message"), BAD_CREDENTIALS)
async def test_auth_get_version_rejected(
    auth_server: ServerAddress, metadata: Mapping[str, str] | None, message: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_channel(auth_server) as channel:
            stub = execution_grpc.PipelineExecutionServiceStub(channel)
            request = epb.VersionRequest(client_version="v1")
            error = await grpc_error(aio(stub.GetVersion)(request, metadata=metadata))
    assert error.status is Status.UNAUTHENTICATED
    assert error.message == message


async def test_auth_good_token_accepted(auth_server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        await assert_serves(auth_server, GOOD)
        await assert_serves(auth_server, {"authorization": "Bearer another-token"})
        async with open_channel(auth_server) as channel:
            stub = execution_grpc.PipelineExecutionServiceStub(channel)
            response = await aio(stub.ExecutePipeline)(execute_request(), metadata=GOOD)
            version = await aio(stub.GetVersion)(
                epb.VersionRequest(client_version="v1"), metadata=GOOD
            )
    assert response.WhichOneof("outcome") == "result"
    assert version.compatible


async def test_auth_health_exempt_by_default(auth_server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_channel(auth_server) as channel:
            response = await aio(HealthStub(channel).Check)(HealthCheckRequest())
    assert response.status == HealthCheckResponse.SERVING


async def test_auth_health_requires_token_when_not_exempt(start_server: ServerFactory) -> None:
    with trio.fail_after(TIMEOUT):
        address = await start_server(tokens=[TOKEN], exempt_health=False)
        async with open_channel(address) as channel:
            health = HealthStub(channel)
            error = await grpc_error(aio(health.Check)(HealthCheckRequest()))
            response = await aio(health.Check)(HealthCheckRequest(), metadata=GOOD)
    assert error.status is Status.UNAUTHENTICATED
    assert error.message == MISSING
    assert response.status == HealthCheckResponse.SERVING


# --------------------------------------------------------------------------- limits


async def test_limits_max_sessions_refuses_second(start_server: ServerFactory) -> None:
    with trio.fail_after(TIMEOUT):
        address = await start_server(max_sessions=1, metrics_port=0)
        async with raw_stream(address) as first:
            await first.open_session()
            async with raw_stream(address) as second:
                await second.send(init())
                error = await grpc_error(second.open_session())
            assert error.status is Status.RESOURCE_EXHAUSTED
            assert "1 sessions" in error.message
            refused = sample(
                await scrape(address), 'remotemedia_sessions_refused_total{reason="full"}'
            )
            assert refused == 1
            # The first session is unaffected.
            await first.send(chunk(text_buffer("first"), 0))
            await first.send(control(CLOSE), end=True)
            assert [kind(r) for r in await first.recv_all()] == ["result", "closed"]
            await first.finish()
        await assert_serves(address)  # the slot is free again


async def test_limits_client_can_lower_max_audio_samples(server: ServerAddress) -> None:
    ok = audio_buffer(np.zeros(100, dtype=np.float32))
    too_big = audio_buffer(np.zeros(101, dtype=np.float32))
    with trio.fail_after(TIMEOUT):
        await expect_stream_error(
            server,
            [init(max_audio_samples=100), chunk(ok, 0), chunk(too_big, 1)],
            pb.ERROR_TYPE_RESOURCE_LIMIT,
            "101",
        )


async def test_limits_client_cannot_raise_max_audio_samples(start_server: ServerFactory) -> None:
    too_big = audio_buffer(np.zeros(101, dtype=np.float32))
    with trio.fail_after(TIMEOUT):
        address = await start_server(max_chunk_samples=100)
        await expect_stream_error(
            address,
            [init(max_audio_samples=1_000_000), chunk(too_big, 0)],
            pb.ERROR_TYPE_RESOURCE_LIMIT,
            "101",
        )


async def test_limits_idle_session_is_resource_limit(start_server: ServerFactory) -> None:
    with trio.fail_after(TIMEOUT):
        address = await start_server(idle_timeout=0.5)
        async with raw_stream(address) as stream:
            await stream.open_session()
            responses = await stream.recv_all()  # the client sends nothing more
            await stream.finish()
        assert [kind(r) for r in responses] == ["error"]
        assert responses[0].error.error_type == pb.ERROR_TYPE_RESOURCE_LIMIT
        # The 0.5 s idle timeout ended the session, not anything else.
        assert "No message from the client for 0.5 s" in responses[0].error.message
        await assert_serves(address)


async def test_limits_idle_before_init_is_resource_limit(start_server: ServerFactory) -> None:
    with trio.fail_after(TIMEOUT):
        address = await start_server(idle_timeout=0.5)
        async with raw_stream(address) as stream:
            responses = await stream.recv_all()  # no init
            await stream.finish()
        assert [kind(r) for r in responses] == ["error"]
        assert responses[0].error.error_type == pb.ERROR_TYPE_RESOURCE_LIMIT
        assert "StreamInit" in responses[0].error.message


async def test_limits_client_can_lower_max_duration(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_stream(server) as stream:
            await stream.open_session(init(max_timeout_ms=300))
            responses = await stream.recv_all()  # the server's idle timeout is 60 s
            await stream.finish()
    assert [kind(r) for r in responses] == ["error"]
    assert responses[-1].error.error_type == pb.ERROR_TYPE_RESOURCE_LIMIT
    # The client's 300 ms, not the server's limits, ended the session.
    assert "maximum duration of 0.3 s" in responses[-1].error.message


async def test_limits_oversized_message_is_resource_exhausted(start_server: ServerFactory) -> None:
    with trio.fail_after(TIMEOUT):
        address = await start_server(max_message_bytes=64 * 1024)
        async with raw_stream(address) as stream:
            await stream.open_session()
            with contextlib.suppress(StreamTerminatedError):  # refused while it went out
                await stream.send(chunk(text_buffer("x" * 100_000), 0))
            error = await grpc_error(stream.recv_all())
        assert error.status is Status.RESOURCE_EXHAUSTED
        await assert_serves(address)
