"""StreamPipeline error paths: each one typed error, then the call ends with gRPC OK.

``expect_stream_error`` also checks that the server serves a new session afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest
import trio

from remotemedia.client import ServerError, open_trio_client
from remotemedia.transport.serving import ServerAddress
from remotemedia.v1 import common_pb2 as pb
from tests.e2e.conftest import (
    CLOSE,
    PASS,
    TIMEOUT,
    ServerFactory,
    audio_buffer,
    chunk,
    control,
    expect_error_on_both_edges,
    init,
    json_buffer,
    manifest,
    text_buffer,
)

VALIDATION = pb.ERROR_TYPE_VALIDATION
RESOURCE_LIMIT = pb.ERROR_TYPE_RESOURCE_LIMIT


async def test_data_before_init_is_validation(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server,
            [chunk(text_buffer("too early"), 0)],
            VALIDATION,
            "StreamInit required before DataChunk",
        )


async def test_control_before_init_is_validation(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server, [control(CLOSE)], VALIDATION, "StreamInit required before StreamControl"
        )


async def test_second_init_is_validation(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server, [init(), init()], VALIDATION, "StreamInit already received"
        )


async def test_init_empty_client_version_is_validation(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server, [init(client_version="")], VALIDATION, "client_version required"
        )


async def test_init_without_manifest_is_validation(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(server, [init(None)], VALIDATION, "manifest required")


async def test_init_params_not_json_is_validation(server: ServerAddress) -> None:
    bad = manifest([("pass", "PassThrough", "{not json")])
    with trio.fail_after(TIMEOUT):
        error = await expect_error_on_both_edges(
            server, [init(bad)], VALIDATION, "$.nodes[0].params"
        )
    assert "$.nodes[0].params" in error.context


async def test_init_node_id_with_control_character_is_validation(server: ServerAddress) -> None:
    bad = manifest([("a\x00b", "PassThrough")])
    with trio.fail_after(TIMEOUT):
        error = await expect_error_on_both_edges(server, [init(bad)], VALIDATION, "U+0000")
    assert error.context == "manifest: $.nodes[0].id"
    assert "use only printable characters in node ids" in error.message


async def test_init_unknown_node_type_is_validation(server: ServerAddress) -> None:
    bad = manifest([("x", "NoSuchNode")])
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(server, [init(bad)], VALIDATION, "NoSuchNode")


async def test_init_cycle_is_validation(server: ServerAddress) -> None:
    cyclic = manifest(
        [("a", "PassThrough"), ("b", "PassThrough"), ("c", "PassThrough")],
        [("a", "b"), ("b", "c"), ("c", "a")],
    )
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(server, [init(cyclic)], VALIDATION, "cycle")


async def test_chunk_unknown_node_id_is_validation(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server, [init(), chunk(text_buffer("hi"), 0, node_id="nope")], VALIDATION, "'nope'"
        )


async def test_chunk_without_buffer_is_validation(server: ServerAddress) -> None:
    empty = chunk(text_buffer(""), 0)
    empty.data_chunk.ClearField("buffer")
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server, [init(), empty], VALIDATION, "DataChunk must have buffer or named_buffers"
        )


async def test_chunk_sequence_backwards_is_validation(server: ServerAddress) -> None:
    requests = [
        init(),
        *(chunk(text_buffer(f"{n}"), n) for n in (0, 1, 5)),
        chunk(text_buffer("x"), 4),
    ]
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(server, requests, VALIDATION, "sequence 4 goes backwards")


async def test_chunk_over_max_samples_is_resource_limit(start_server: ServerFactory) -> None:
    with trio.fail_after(TIMEOUT):
        address = await start_server(max_chunk_samples=1000)
        ok = audio_buffer(np.zeros(1000, dtype=np.float32))
        too_big = audio_buffer(np.zeros(1001, dtype=np.float32))
        await expect_error_on_both_edges(
            address, [init(), chunk(ok, 0), chunk(too_big, 1)], RESOURCE_LIMIT, "1001", "1000"
        )


async def test_init_too_many_nodes_is_resource_limit(start_server: ServerFactory) -> None:
    three = manifest(
        [("a", "PassThrough"), ("b", "PassThrough"), ("c", "PassThrough")], [("a", "b"), ("b", "c")]
    )
    with trio.fail_after(TIMEOUT):
        address = await start_server(max_nodes=2)
        await expect_error_on_both_edges(address, [init(three)], RESOURCE_LIMIT, "3 nodes")


async def test_node_failure_is_node_execution(server: ServerAddress) -> None:
    calc = manifest([("calc", "CalculatorNode")])
    fine = json_buffer({"operation": "add", "operands": [1, 2]})
    divide_by_zero = json_buffer({"operation": "divide", "operands": [1, 0]})
    with trio.fail_after(TIMEOUT):
        error = await expect_error_on_both_edges(
            server,
            [init(calc), chunk(fine, 0, "calc"), chunk(divide_by_zero, 1, "calc")],
            pb.ERROR_TYPE_NODE_EXECUTION,
            "division by zero",
        )
    assert error.failing_node_id == "calc"


async def test_unknown_control_command_is_validation(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server, [init(PASS), control(7)], VALIDATION, "StreamControl"
        )


async def test_server_file_paths_in_params_are_refused_from_clients(server: ServerAddress) -> None:
    manifest = {
        "version": "v1",
        "nodes": [
            {"id": "vad", "node_type": "SileroVADNode", "params": {"model_path": "/etc/passwd"}}
        ],
    }
    with trio.fail_after(TIMEOUT):
        async with open_trio_client(f"{server.host}:{server.port}") as client:
            with pytest.raises(ServerError) as caught:
                async with client.stream(manifest):
                    pass
    assert caught.value.error_type == "VALIDATION"
    assert "$.nodes[0].params.model_path: names a file on the server" in str(caught.value)


async def test_audio_channels_zero_is_validation_naming_the_field(server: ServerAddress) -> None:
    # The server used to take channels = 0 (the proto default) as mono.
    zero = audio_buffer(np.zeros(160, dtype=np.float32), channels=0)
    with trio.fail_after(TIMEOUT):
        error = await expect_error_on_both_edges(
            server,
            [init(), chunk(zero, 0)],
            VALIDATION,
            "data_chunk.buffer.audio.channels is 0",
            "between 1 and 8",
        )
    assert error.message == (
        "data_chunk.buffer.audio.channels is 0; it must be between 1 and 8 (1 for mono)."
    )


async def test_audio_metadata_json_nested_too_deeply_is_validation(server: ServerAddress) -> None:
    deep = audio_buffer(np.zeros(160, dtype=np.float32))
    deep.audio.metadata_json = b"[" * 100_000 + b"]" * 100_000
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server,
            [init(), chunk(deep, 0)],
            VALIDATION,
            "data_chunk.buffer.audio.metadata_json is nested too deeply",
        )


async def test_init_expected_chunk_size_over_the_limit_is_validation(
    start_server: ServerFactory,
) -> None:
    with trio.fail_after(TIMEOUT):
        address = await start_server(max_chunk_samples=1000)
        await expect_error_on_both_edges(
            address,
            [init(expected_chunk_size=1001)],
            VALIDATION,
            "init.expected_chunk_size is 1001",
            "between 1 and 1000",
        )


async def test_init_resource_limits_tiny_memory_is_validation(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server,
            [init(max_memory_bytes=1)],
            VALIDATION,
            "init.resource_limits.max_memory_bytes is 1",
            "at least 1024",
        )


async def test_unknown_param_is_validation_under_strict_params(
    start_server: ServerFactory,
) -> None:
    original = manifest([("calc", "CalculatorNode", {"operation": "add", "value": 5.0})])
    with trio.fail_after(TIMEOUT):
        address = await start_server(strict_params=True)
        error = await expect_error_on_both_edges(
            address,
            [init(original)],
            VALIDATION,
            "$.nodes[0].params.value: unknown parameter 'value'. Allowed parameters: operation.",
        )
    assert error.context == "manifest: $.nodes[0].params.value"
