"""The bad-input corpus, over the wire: each gets a typed error naming the field, and
the server keeps serving (every case ends by opening a normal session).

Cases that other e2e tests already cover one by one (data before init, unknown node
types, cycles, strict params, ...) are in ``test_stream_errors.py``; this file holds
the hostile inputs: malformed bytes, non-finite audio, lying sizes, hostile JSON,
huge manifests, and connections that are not gRPC at all.
"""

from __future__ import annotations

import contextlib
import json
import random
import struct

import numpy as np
import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from h2.exceptions import StreamClosedError

from remotemedia.manifest import ManifestError, parse_manifest
from remotemedia.transport.serving import ServerAddress
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_pb2 as epb
from remotemedia.v1 import streaming_pb2 as spb
from tests.e2e.conftest import (
    TIMEOUT,
    ServerFactory,
    aio,
    assert_serves,
    audio_buffer,
    chunk,
    expect_error_on_both_edges,
    init,
    manifest,
    raw_stream,
)

VALIDATION = pb.ERROR_TYPE_VALIDATION
LIMIT = pb.ERROR_TYPE_RESOURCE_LIMIT
AUDIO = manifest([("pass", "PassThrough")])


def _frame(body: bytes) -> bytes:
    return struct.pack(">?I", False, len(body)) + body


async def _raw_body(server: ServerAddress, body: bytes) -> GRPCError:
    """Send ``body`` as the request stream's bytes; the call's gRPC error.

    The send runs beside the read: the server may refuse a message before it has
    read all of it, and then the rest never fits the flow-control window (or the
    stream is reset while grpclib is between two frames, which its client reports
    as h2's StreamClosedError).
    """
    async with raw_stream(server) as stream, trio.open_nursery() as nursery:

        async def send() -> None:
            with contextlib.suppress(StreamTerminatedError, StreamClosedError):
                await aio(stream.stream._stream.send_data)(body, end_stream=True)
            stream.ended = True

        nursery.start_soon(send)
        with pytest.raises(GRPCError) as caught:
            await stream.recv_all()
        nursery.cancel_scope.cancel()
    return caught.value


# ----------------------------------------------------------------- malformed protobuf bytes


@pytest.mark.parametrize(
    "body",
    [
        _frame(init().SerializeToString()[:-7]),  # a StreamRequest cut short
        _frame(random.Random(1).randbytes(300)),
        _frame(random.Random(2).randbytes(4000)),
        _frame(b"\x0a\xff\xff\xff\xff\x0f"),  # a field length far beyond the message
    ],
    ids=["truncated-protobuf", "random-300", "random-4000", "length-beyond-message"],
)
async def test_malformed_protobuf_is_invalid_argument_naming_the_message(
    server: ServerAddress, body: bytes
) -> None:
    with trio.fail_after(TIMEOUT):
        error = await _raw_body(server, body)
        assert error.status is Status.INVALID_ARGUMENT, error
        assert "is not a valid StreamRequest" in (error.message or "")
        await assert_serves(server)


async def test_oversized_message_is_resource_exhausted(start_server: ServerFactory) -> None:
    server = await start_server(max_message_bytes=64 * 1024)
    with trio.fail_after(TIMEOUT):
        error = await _raw_body(server, struct.pack(">?I", False, 10 * 1024 * 1024) + b"x" * 100)
        assert error.status is Status.RESOURCE_EXHAUSTED, error
        assert "exceeds the 65536-byte limit" in (error.message or "")
        await assert_serves(server)


# ----------------------------------------------------------------- wrong order of the oneof


async def test_init_after_data_is_validation(server: ServerAddress) -> None:
    text = pb.DataBuffer(text=pb.TextBuffer(text_data=b"hi", encoding="utf-8"))
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server, [init(), chunk(text, 0), init()], VALIDATION, "StreamInit already received"
        )


async def test_empty_request_before_init_is_validation(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server, [spb.StreamRequest()], VALIDATION, "StreamInit required before an empty"
        )


# ----------------------------------------------------------------- audio


def _audio(samples: np.ndarray, **fields: int) -> spb.StreamRequest:
    return chunk(audio_buffer(samples, **fields), 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "name"), [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "-Inf")], ids=str
)
async def test_non_finite_audio_is_validation(
    server: ServerAddress, value: float, name: str
) -> None:
    samples = np.zeros(160, dtype=np.float32)
    samples[17] = value
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server, [init(AUDIO), _audio(samples)], VALIDATION, "data_chunk.buffer.audio"
        )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"sample_rate": 0}, "sample_rate is 0"),
        ({"sample_rate": 2**32 - 1}, f"sample_rate is {2**32 - 1}"),
        ({"channels": 0}, "channels is 0"),
        ({"channels": 2**32 - 1}, f"channels is {2**32 - 1}"),
        ({"num_samples": 10_000_000}, "num_samples is 10000000"),
        ({"num_samples": 1}, "num_samples is 1"),
        ({"fmt": 77}, "format 77"),
    ],
    ids=[
        "rate-0",
        "rate-huge",
        "channels-0",
        "channels-huge",
        "num-samples-more",
        "num-samples-less",
        "format",
    ],
)
async def test_audio_fields_out_of_range_are_validation_naming_the_field(
    server: ServerAddress, fields: dict[str, int], field: str
) -> None:
    samples = np.zeros(160, dtype=np.float32)
    if fields.get("fmt") == 77:
        request = chunk(
            pb.DataBuffer(
                audio=pb.AudioBuffer(
                    samples=samples.tobytes(), sample_rate=16000, channels=1, format=77
                )  # type: ignore[arg-type]
            ),
            0,
        )
    else:
        request = _audio(samples, **fields)
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server, [init(AUDIO), request], VALIDATION, "data_chunk.buffer.audio", field
        )


# ----------------------------------------------------------------- text and JSON


async def test_non_utf8_text_is_validation(server: ServerAddress) -> None:
    text = pb.DataBuffer(text=pb.TextBuffer(text_data=b"ok \xff\xfe bad", encoding="utf-8"))
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server, [init(), chunk(text, 0)], VALIDATION, "data_chunk.buffer.text"
        )


async def test_deeply_nested_json_params_are_validation(server: ServerAddress) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server,
            [init(manifest([("pass", "PassThrough", nested)]))],
            VALIDATION,
            "$.nodes[0].params",
        )


async def test_huge_json_params_are_refused_by_the_message_limit(
    start_server: ServerFactory,
) -> None:
    server = await start_server(max_message_bytes=1024 * 1024)
    huge = json.dumps({"blob": "x" * (2 * 1024 * 1024)})
    request = init(manifest([("pass", "PassThrough", huge)]))
    with trio.fail_after(TIMEOUT):
        error = await _raw_body(server, _frame(request.SerializeToString()))
        assert error.status is Status.RESOURCE_EXHAUSTED, error
        assert "exceeds the 1048576-byte limit" in (error.message or "")
        await assert_serves(server)


async def test_50000_unknown_params_get_ten_warnings_and_a_summary(
    server: ServerAddress,
) -> None:
    params = json.dumps({f"key{index}": index for index in range(50_000)})
    with trio.fail_after(TIMEOUT):
        async with raw_stream(server) as stream:
            await stream.send(init(manifest([("pass", "PassThrough", params)])))
            warnings = []
            while (response := await stream.recv()) is not None:
                if response.WhichOneof("response") == "ready":
                    break
                text = response.result.data_outputs["_status"].text.text_data.decode()
                if "status=warning" in text:
                    warnings.append(text)
            await stream.send(spb.StreamRequest(control=spb.StreamControl(command=1)), end=True)
            await stream.recv_all()
            await stream.finish()
        assert len(warnings) == 11
        assert "$.nodes[0].params.key0" in warnings[0]
        assert "49990 more params that this node type does not declare" in warnings[-1]
        await assert_serves(server)


# ----------------------------------------------------------------- huge manifests


async def test_manifest_with_10000_nodes_is_resource_limit(server: ServerAddress) -> None:
    wire = epb.PipelineManifest(version="v1")
    for index in range(10_000):
        wire.nodes.add(id=f"n{index}", node_type="PassThrough", params="{}")
    with trio.fail_after(TIMEOUT):
        await expect_error_on_both_edges(
            server, [init(wire)], LIMIT, "The manifest has 10000 nodes", "at most 64"
        )


def test_yaml_alias_bomb_is_refused_quickly_with_its_place() -> None:
    """Billion laughs: nine levels of nine aliases would expand to 10^9 strings."""
    lines = ['a0: &a0 "lol"']
    for level in range(1, 10):
        previous = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([previous] * 9)}]")
    lines.append("version: v1")
    lines.append("nodes: *a9")
    with pytest.raises(ManifestError) as caught:
        parse_manifest("\n".join(lines), source="bomb.yaml")
    assert str(caught.value) == (
        "The pipeline manifest in bomb.yaml has 1 problem:\n  $: the YAML expands to more than "
        "1,000,000 values through its aliases (*name); a manifest needs far fewer. Is it an "
        "alias bomb?"
    )


# ----------------------------------------------------------------- not gRPC at all


async def _send_and_read(server: ServerAddress, data: bytes) -> bytes:
    async with await trio.open_tcp_stream(server.host, server.port) as stream:
        await stream.send_all(data)
        received = b""
        while chunk_ := await stream.receive_some(65536):
            received += chunk_
        return received


async def test_garbage_before_the_http2_preface_closes_the_connection(
    server: ServerAddress,
) -> None:
    with trio.fail_after(TIMEOUT):
        await _send_and_read(server, random.Random(3).randbytes(64) + b"PRI * HTTP/2.0\r\n")
        await assert_serves(server)


async def test_http1_request_closes_the_connection(server: ServerAddress) -> None:
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    with trio.fail_after(TIMEOUT):
        await _send_and_read(server, request)
        await assert_serves(server)
