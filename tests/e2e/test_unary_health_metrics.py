"""ExecutePipeline, GetVersion, the /metrics endpoint, and cleanup after a client cancels."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import numpy as np
import pytest
import trio
from grpclib.const import Status

from remotemedia.client import ServerError, open_trio_client
from remotemedia.media import Json, Text
from remotemedia.service.identity import SERVER_HEADER
from remotemedia.transport.serving import ServerAddress
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_grpc
from remotemedia.v1 import execution_pb2 as epb
from tests.e2e.conftest import (
    TIMEOUT,
    ServerFactory,
    aio,
    assert_serves,
    audio_buffer,
    audio_samples,
    grpc_error,
    http_get,
    json_buffer,
    live_session_tasks,
    manifest,
    open_channel,
    sample,
    scrape,
    wait_for_sample,
    wait_no_session_tasks,
)

CALC = manifest([("calc", "CalculatorNode")])


async def execute(address: ServerAddress, request: epb.ExecuteRequest) -> epb.ExecuteResponse:
    async with open_channel(address) as channel:
        stub = execution_grpc.PipelineExecutionServiceStub(channel)
        response: epb.ExecuteResponse = await aio(stub.ExecutePipeline)(request)
        return response


# --------------------------------------------------------------------------- ExecutePipeline


async def test_execute_calculator_add(server: ServerAddress) -> None:
    request = epb.ExecuteRequest(
        manifest=CALC,
        data_inputs={"calc": json_buffer({"operation": "add", "operands": [2, 3, 4.5]})},
        client_version="v1",
    )
    with trio.fail_after(TIMEOUT):
        response = await execute(server, request)
    assert response.WhichOneof("outcome") == "result"
    result = response.result
    assert result.status == pb.EXECUTION_STATUS_SUCCESS
    assert list(result.data_outputs) == ["calc"]
    assert result.data_outputs["calc"].WhichOneof("data_type") == "json"
    output = json.loads(result.data_outputs["calc"].json.json_payload)
    assert output == {"operation": "add", "operands": [2, 3, 4.5], "result": 9.5}


async def test_execute_ignores_unknown_params_as_the_original_did(server: ServerAddress) -> None:
    original = manifest([("calc", "CalculatorNode", {"operation": "add", "value": 5.0})])
    request = epb.ExecuteRequest(
        manifest=original,
        data_inputs={"calc": json_buffer({"operands": [2, 3]})},
        client_version="v1",
    )
    with trio.fail_after(TIMEOUT):
        response = await execute(server, request)
    assert response.WhichOneof("outcome") == "result", response
    assert json.loads(response.result.data_outputs["calc"].json.json_payload)["result"] == 5


async def test_execute_sdk_client_returns_sink_outputs(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_trio_client(f"{server.host}:{server.port}") as client:
            outputs = await client.execute(
                {"version": "v1", "nodes": [{"id": "calc", "node_type": "CalculatorNode"}]},
                {"calc": Json({"operation": "multiply", "operands": [6, 7]})},
            )
    assert list(outputs) == ["calc"]
    assert outputs["calc"] == Json({"operation": "multiply", "operands": [6, 7], "result": 42})


async def test_execute_two_nodes_returns_last_sink_output(server: ServerAddress) -> None:
    two_nodes = manifest(
        [("chunker", "AudioChunkerNode", {"chunk_size": 100}), ("pass", "PassThrough")],
        [("chunker", "pass")],
    )
    sent = np.arange(250, dtype=np.float32) / 250
    request = epb.ExecuteRequest(
        manifest=two_nodes, data_inputs={"chunker": audio_buffer(sent)}, client_version="v1"
    )
    with trio.fail_after(TIMEOUT):
        response = await execute(server, request)
    assert response.WhichOneof("outcome") == "result", response
    outputs = response.result.data_outputs
    assert list(outputs) == ["pass"]  # only the sink
    # The chunker produced 100, 100, then the 50-sample remainder: the last one counts.
    np.testing.assert_array_equal(audio_samples(outputs["pass"]), sent[200:])


async def test_execute_every_sink_reported(server: ServerAddress) -> None:
    fan_out = manifest(
        [
            ("chunker", "AudioChunkerNode", {"chunk_size": 100}),
            ("left", "PassThrough"),
            ("right", "Echo"),
        ],
        [("chunker", "left"), ("chunker", "right")],
    )
    sent = np.arange(230, dtype=np.float32) / 230
    request = epb.ExecuteRequest(
        manifest=fan_out, data_inputs={"chunker": audio_buffer(sent)}, client_version="v1"
    )
    with trio.fail_after(TIMEOUT):
        response = await execute(server, request)
    assert response.WhichOneof("outcome") == "result", response
    outputs = response.result.data_outputs
    assert sorted(outputs) == ["left", "right"]
    for sink in ("left", "right"):
        np.testing.assert_array_equal(audio_samples(outputs[sink]), sent[200:])


@pytest.mark.parametrize(
    ("bad_manifest", "substring"),
    [
        pytest.param(manifest([("calc", "NoSuchNode")]), "NoSuchNode", id="unknown-type"),
        pytest.param(
            manifest([("calc", "CalculatorNode", "{oops")]), "$.nodes[0].params", id="bad-params"
        ),
    ],
)
async def test_execute_bad_manifest_is_validation(
    server: ServerAddress, bad_manifest: epb.PipelineManifest, substring: str
) -> None:
    request = epb.ExecuteRequest(
        manifest=bad_manifest,
        data_inputs={"calc": json_buffer({"operation": "add", "operands": [1, 2]})},
        client_version="v1",
    )
    with trio.fail_after(TIMEOUT):
        response = await execute(server, request)
    assert response.WhichOneof("outcome") == "error"
    assert response.error.error_type == pb.ERROR_TYPE_VALIDATION
    assert substring in response.error.message


async def test_execute_node_failure_is_node_execution(server: ServerAddress) -> None:
    request = epb.ExecuteRequest(
        manifest=CALC,
        data_inputs={"calc": json_buffer({"operation": "divide", "operands": [1, 0]})},
        client_version="v1",
    )
    with trio.fail_after(TIMEOUT):
        response = await execute(server, request)
        await assert_serves(server)
    assert response.WhichOneof("outcome") == "error"
    assert response.error.error_type == pb.ERROR_TYPE_NODE_EXECUTION
    assert response.error.failing_node_id == "calc"
    assert "division by zero" in response.error.message


async def test_execute_without_manifest_is_invalid_argument(server: ServerAddress) -> None:
    request = epb.ExecuteRequest(
        data_inputs={"calc": json_buffer({"operation": "add", "operands": [1, 2]})},
        client_version="v1",
    )
    with trio.fail_after(TIMEOUT):
        async with open_channel(server) as channel:
            stub = execution_grpc.PipelineExecutionServiceStub(channel)
            error = await grpc_error(aio(stub.ExecutePipeline)(request))
    assert error.status is Status.INVALID_ARGUMENT
    assert "Manifest is required" in (error.message or "")


# --------------------------------------------------------------------------- GetVersion


async def test_version_describes_server(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_trio_client(f"{server.host}:{server.port}") as client:
            response = await client.version("v1")
    info = response.version_info
    assert info.protocol_version == "v1"
    assert list(info.supported_protocols) == ["v1"]
    assert info.runtime_version
    assert {"SileroVADNode", "PassThrough", "CalculatorNode"} <= set(info.supported_node_types)
    assert response.compatible


async def test_every_response_names_its_server_process(server: ServerAddress) -> None:
    # In-process server: its process is this one.
    expected = f"{socket.gethostname()}/{os.getpid()}"
    with trio.fail_after(TIMEOUT):
        async with (
            open_trio_client(f"{server.host}:{server.port}") as client,
            client.stream("passthrough") as stream,
        ):
            assert stream.handle.server == expected

        async def version_header(channel: Any) -> str:  # on asyncio
            stub = execution_grpc.PipelineExecutionServiceStub(channel)
            async with stub.GetVersion.open() as call:
                await call.send_message(epb.VersionRequest(client_version="v1"), end=True)
                await call.recv_message()
                return str(call.initial_metadata[SERVER_HEADER])

        async with open_channel(server) as channel:
            assert await aio(version_header)(channel) == expected


@pytest.mark.parametrize(
    ("client_version", "compatible"),
    [("v1", True), ("1.2", True), ("v2", False), ("", False)],
)
async def test_version_compatibility_computed(
    server: ServerAddress, client_version: str, compatible: bool
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_trio_client(f"{server.host}:{server.port}") as client:
            response = await client.version(client_version)
    assert response.compatible is compatible
    assert response.compatibility_message  # says why, either way


# --------------------------------------------------------------------------- /metrics


async def test_metrics_endpoint_serves_prometheus_text(start_server: ServerFactory) -> None:
    with trio.fail_after(TIMEOUT):
        address = await start_server(metrics_port=0)
        await assert_serves(address)  # one session with one chunk
        text = await scrape(address)
        status, _, body = await http_get(address.host, address.metrics_port or 0, "/other")
    for name in (
        "remotemedia_grpc_requests_total",
        "remotemedia_stream_chunks_total",
        "remotemedia_grpc_active_streams",
    ):
        assert f"# TYPE {name} " in text
    assert (
        sample(text, 'remotemedia_grpc_requests_total{method="StreamPipeline",status="success"}')
        == 1
    )
    assert sample(text, 'remotemedia_stream_chunks_total{status="success"}') == 1
    assert sample(text, "remotemedia_grpc_active_streams") == 0
    assert sample(text, "remotemedia_stream_chunk_latency_seconds_count") == 1
    assert status == 404
    assert "/metrics" in body


async def test_metrics_node_processing_histogram_has_samples(start_server: ServerFactory) -> None:
    with trio.fail_after(TIMEOUT):
        address = await start_server(metrics_port=0)
        await assert_serves(address)
        text = await scrape(address)
    assert sample(text, 'remotemedia_node_processing_seconds_count{node_type="PassThrough"}') == 1


# --------------------------------------------------------------------------- client cancel


async def test_client_cancel_mid_stream_leaves_no_session(start_server: ServerFactory) -> None:
    active = "remotemedia_grpc_active_streams"
    with trio.fail_after(TIMEOUT):
        address = await start_server(metrics_port=0)
        with trio.CancelScope() as client_scope:
            async with (
                open_trio_client(f"{address.host}:{address.port}") as client,
                client.stream("passthrough") as stream,
            ):
                for n in range(5):
                    await stream.send(Text(f"chunk {n}"))
                first = await stream.__anext__()
                assert first.node_id == "pass"
                assert first.data == Text("chunk 0")
                await wait_for_sample(address, active, 1)
                assert live_session_tasks()
                client_scope.cancel()  # mid-stream: no close, no cancel message
                await trio.sleep_forever()
        assert client_scope.cancelled_caught
        await wait_for_sample(address, active, 0)
        await wait_no_session_tasks()
        await assert_serves(address)


async def test_client_leaving_a_closed_session_unread_is_not_an_error(
    start_server: ServerFactory,
) -> None:
    active = "remotemedia_grpc_active_streams"
    with trio.fail_after(TIMEOUT):
        address = await start_server(metrics_port=0)
        async with open_trio_client(f"{address.host}:{address.port}") as client:
            async with client.stream("passthrough") as stream:
                await stream.send(Text("unread"))
                await stream.close()
                await wait_for_sample(address, active, 0)  # the server ended the call
            # Leaving it (results unread) cancels nothing: it ended. The client is fine.
            assert (await client.version("v1")).compatible


async def test_client_sdk_stream_error_raises_server_error(server: ServerAddress) -> None:
    async def send_to_unknown_node() -> None:
        async with (
            open_trio_client(f"{server.host}:{server.port}") as client,
            client.stream("passthrough") as stream,
        ):
            await stream.send(Text("x"), node_id="nope")
            async for _ in stream:
                pass

    with trio.fail_after(TIMEOUT), pytest.raises(ServerError) as caught:
        await send_to_unknown_node()
    assert caught.value.error_type == "VALIDATION"
    assert "'nope'" in str(caught.value)
