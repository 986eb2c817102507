"""`remotemedia serve` as a real process: drain on SIGTERM, dead clients, a grpcio client."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import numpy as np
import pytest
import trio
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from remotemedia import Audio, ServerError
from remotemedia.client import open_trio_client
from remotemedia.client.client import load_client_manifest
from remotemedia.config import TRANSPORTS
from remotemedia.service.convert import data_to_wire, manifest_to_wire
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_pb2 as epb
from remotemedia.v1 import streaming_pb2 as spb
from tests.processes import SERVE, parse_listening, server_process, sigterm_with_live_streams

pytestmark = pytest.mark.slow


async def active_streams(metrics_port: int) -> int:
    stream = await trio.open_tcp_stream("127.0.0.1", metrics_port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        body = b""
        while chunk := await stream.receive_some(65536):
            body += chunk
    match = re.search(rb"^remotemedia_grpc_active_streams (\d+)", body, re.MULTILINE)
    assert match, body[:500]
    return int(match.group(1))


async def test_server_sigterm_gives_every_live_stream_closed_and_exits_zero() -> None:
    # The drain may take longer than the test: the server exits because every live
    # stream ended, not because its drain timed out.
    with trio.fail_after(60):
        async with server_process("--drain-timeout", "600") as (process, address, _):
            reasons = await sigterm_with_live_streams(process, address, 3)
            assert reasons == ["Server is shutting down"] * 3
            assert await process.wait() == 0


CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, trio
    from remotemedia import Audio
    from remotemedia.client import open_trio_client

    async def main():
        async with open_trio_client(sys.argv[1]) as client, client.stream("vad") as stream:
            print("streaming", flush=True)
            while True:
                await stream.send(Audio(np.zeros(441, np.float32), 22050))
                await trio.sleep(0.02)

    trio.run(main)
    """
)


async def test_server_drops_the_session_of_a_killed_client_process() -> None:
    with trio.fail_after(60):
        async with server_process("--metrics-port", "0") as (_, address, metrics):
            assert metrics is not None
            client = await trio.lowlevel.open_process(
                [sys.executable, "-c", CLIENT_SCRIPT, address], stdout=subprocess.PIPE
            )
            try:
                assert client.stdout is not None
                assert b"streaming" in await client.stdout.receive_some(100)
                assert await active_streams(metrics) == 1
                client.kill()
                await client.wait()
                # The server learns of the dead client from the closed TCP connection.
                while await active_streams(metrics) != 0:  # noqa: ASYNC110 - a remote count
                    await trio.sleep(0.05)
            finally:
                with trio.CancelScope(shield=True):
                    if client.returncode is None:
                        client.kill()
                    await client.wait()
                    if client.stdout is not None:
                        await client.stdout.aclose()


@contextmanager
def sync_server(*extra: str) -> Iterator[str]:
    with subprocess.Popen([*SERVE, *extra], stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            address, _ = parse_listening(process.stdout.readline())
            yield address
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                assert process.wait(timeout=20) == 0
            finally:
                if process.poll() is None:
                    process.kill()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_grpcio_client_streams_and_executes_against_remotemedia_serve(transport: str) -> None:
    """A client on the official gRPC stack, written from the protocol alone."""
    manifest = manifest_to_wire(load_client_manifest("passthrough"))
    with (
        sync_server("--transport", transport) as address,
        grpc.insecure_channel(address) as channel,
    ):
        stream_pipeline = channel.stream_stream(
            "/remotemedia.v1.StreamingPipelineService/StreamPipeline",
            request_serializer=spb.StreamRequest.SerializeToString,
            response_deserializer=spb.StreamResponse.FromString,
        )

        def requests() -> Iterator[spb.StreamRequest]:
            yield spb.StreamRequest(init=spb.StreamInit(manifest=manifest, client_version="v1"))
            for sequence in (5, 6, 7):
                text = pb.DataBuffer(text=pb.TextBuffer(text_data=f"chunk {sequence}".encode()))
                yield spb.StreamRequest(
                    data_chunk=spb.DataChunk(node_id="pass", buffer=text, sequence=sequence)
                )
            yield spb.StreamRequest(
                control=spb.StreamControl(command=spb.StreamControl.COMMAND_CLOSE)
            )

        responses = list(stream_pipeline(requests(), timeout=30))
        kinds = [r.WhichOneof("response") for r in responses]
        assert "ready" in kinds
        assert kinds[-1] == "closed"
        results = [
            r.result
            for r in responses
            if r.WhichOneof("response") == "result" and "_status" not in r.result.data_outputs
        ]
        assert [(r.sequence, list(r.data_outputs)) for r in results] == [
            (5, ["pass"]),
            (6, ["pass"]),
            (7, ["pass"]),
        ]
        assert results[1].data_outputs["pass"].text.text_data == b"chunk 6"
        assert responses[-1].closed.reason == "Client requested close"

        health = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=HealthCheckRequest.SerializeToString,
            response_deserializer=HealthCheckResponse.FromString,
        )
        service = "remotemedia.v1.StreamingPipelineService"
        checked = health(HealthCheckRequest(service=service), timeout=30)
        assert checked.status == HealthCheckResponse.SERVING

        execute = channel.unary_unary(
            "/remotemedia.v1.PipelineExecutionService/ExecutePipeline",
            request_serializer=epb.ExecuteRequest.SerializeToString,
            response_deserializer=epb.ExecuteResponse.FromString,
        )
        audio = data_to_wire(Audio(np.linspace(-1, 1, 160, dtype=np.float32), 16_000))
        response = execute(
            epb.ExecuteRequest(manifest=manifest, data_inputs={"pass": audio}, client_version="v1"),
            timeout=30,
        )
        assert response.WhichOneof("outcome") == "result"
        echoed = response.result.data_outputs["pass"].audio
        assert (echoed.sample_rate, echoed.num_samples, echoed.format) == (
            16_000,
            160,
            pb.AUDIO_FORMAT_F32,
        )
        np.testing.assert_array_equal(
            np.frombuffer(echoed.samples, "<f4"), np.linspace(-1, 1, 160, dtype=np.float32)
        )


async def test_trio_client_reports_a_refused_connection_as_a_server_error() -> None:
    with trio.fail_after(20), pytest.raises(ServerError):
        async with open_trio_client("127.0.0.1:1") as client:
            await client.version()
