"""StreamPipeline happy paths over a real socket: the protocol flow, close, cancel, audio."""

from __future__ import annotations

import gc
import json
import logging
import sys
from typing import Any

import attrs
import numpy as np
import pytest
import trio
from grpclib.exceptions import GRPCError, StreamTerminatedError

from remotemedia.transport.serving import ServerAddress, serve
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import streaming_pb2 as spb
from tests.e2e.conftest import (
    CANCEL,
    CHAIN,
    CLOSE,
    PASS,
    TIMEOUT,
    aio,
    audio_buffer,
    audio_samples,
    chunk,
    control,
    expect_stream_error,
    init,
    is_status,
    json_buffer,
    kind,
    make_config,
    manifest,
    open_channel,
    open_raw_stream,
    raw_stream,
    status_text,
    text_buffer,
)

CHUNKER = manifest([("chunker", "AudioChunkerNode", {"chunk_size": 1000})])


async def test_stream_full_protocol_flow(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_stream(server) as stream:
            await stream.send(init(CHAIN, expected_chunk_size=960))
            before_ready = []
            while kind(response := await stream.recv()) != "ready":
                before_ready.append(response)
            ready = response.ready

            # `_status` results, all with sequence 0, come first.
            assert before_ready
            assert all(is_status(r) and r.result.sequence == 0 for r in before_ready)
            lines = [status_text(r) for r in before_ready]
            assert lines[0] == "[_system] status=initializing message=Initializing 2 nodes..."
            assert lines[-1] == "[_system] status=ready message=All 2 nodes ready for streaming"
            for node_id in ("a", "b"):
                node_lines = [line for line in lines if line.startswith(f"[{node_id}] ")]
                assert [line.split()[1] for line in node_lines] == [
                    "status=initializing",
                    "status=ready",
                ]
            assert ready.session_id
            assert ready.recommended_chunk_size == 960
            assert ready.max_buffer_latency_ms == 100

            # 20 chunks, alternately text and audio, sent to the source node "a".
            sent: dict[int, pb.DataBuffer] = {}
            for sequence in range(20):
                if sequence % 2:
                    samples = np.linspace(-1, 1, 160, dtype=np.float32) * (sequence / 20)
                    buffer = audio_buffer(samples)
                else:
                    buffer = text_buffer(f"chunk {sequence}")
                sent[sequence] = buffer
                await stream.send(chunk(buffer, sequence, node_id="a"))
            await stream.send(control(CLOSE), end=True)
            responses = await stream.recv_all()
            await stream.finish()

        kinds = [kind(r) for r in responses]
        assert kinds[-1] == "closed"
        assert kinds.count("closed") == 1
        assert "error" not in kinds

        # Results: one per chunk, keyed by the sink "b" only, in order, before closed.
        results = [r.result for r in responses if kind(r) == "result"]
        assert [r.sequence for r in results] == list(range(20))
        for result in results:
            assert list(result.data_outputs) == ["b"]
            output, expected = result.data_outputs["b"], sent[result.sequence]
            if expected.HasField("text"):
                assert output.text.text_data == expected.text.text_data
            else:
                np.testing.assert_array_equal(
                    audio_samples(output), np.frombuffer(expected.audio.samples, "<f4")
                )
                assert output.audio.sample_rate == 16_000

        # A metrics message after every 10 chunks.
        metrics = [r.metrics for r in responses if kind(r) == "metrics"]
        assert [m.chunks_processed for m in metrics] == [10, 20]
        assert all(m.session_id == ready.session_id for m in metrics)
        assert dict(metrics[-1].data_type_breakdown) == {"text": 10, "audio": 10}

        closed = responses[-1].closed
        assert closed.reason == "Client requested close"
        assert closed.session_id == ready.session_id
        assert closed.final_metrics.wall_time_ms > 0


async def test_stream_unknown_param_is_ignored_with_a_status_warning(
    server: ServerAddress, caplog: pytest.LogCaptureFixture
) -> None:
    # The original's CalculatorNode example passes `value`, which the original ignored.
    original = manifest([("calc", "CalculatorNode", {"operation": "add", "value": 5.0})])
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.WARNING, "remotemedia.service"):
        async with raw_stream(server) as stream:
            await stream.send(init(original))
            before_ready = []
            while kind(response := await stream.recv()) != "ready":
                before_ready.append(response)
            await stream.send(chunk(json_buffer({"operands": [1, 2]}), 0, node_id="calc"))
            await stream.send(control(CLOSE), end=True)
            responses = await stream.recv_all()
            await stream.finish()

    lines = [status_text(r) for r in before_ready]
    assert lines[0] == "[_system] status=initializing message=Initializing 1 nodes..."
    assert lines[1] == (
        "[calc] status=warning message=$.nodes[0].params.value: unknown parameter 'value'. "
        "Allowed parameters: operation. It is ignored; remove it or correct its name."
    )
    assert [line.split()[1] for line in lines].count("status=warning") == 1
    assert [kind(r) for r in responses] == ["result", "closed"]
    output = json.loads(responses[0].result.data_outputs["calc"].json.json_payload)
    assert output["result"] == 3  # `operation: add` applied, `value` ignored
    (record,) = [r for r in caplog.records if "unknown param" in r.getMessage()]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "node 'calc' has the unknown param 'value' at $.nodes[0].params.value" in message
    assert "(closest known param: none is similar)" in message
    assert "--strict-params" in message


async def test_stream_ready_default_chunk_size(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_stream(server) as stream:
            ready = await stream.open_session(init(PASS, client_version="test-v1.0"))
            assert ready.recommended_chunk_size == 4096
            assert ready.max_buffer_latency_ms == 100
            await stream.send(control(CLOSE), end=True)
            assert [kind(r) for r in await stream.recv_all()] == ["closed"]
            await stream.finish()


async def test_stream_close_flushes_in_flight_work(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_stream(server) as stream:
            await stream.open_session(init(CHUNKER))
            sent = np.arange(1500, dtype=np.float32) / 1500
            for sequence in range(5):
                samples = sent[sequence * 300 : (sequence + 1) * 300]
                await stream.send(chunk(audio_buffer(samples), sequence, node_id="chunker"))
            await stream.send(control(CLOSE), end=True)
            responses = await stream.recv_all()
            await stream.finish()

    assert [kind(r) for r in responses] == ["result", "result", "closed"]
    full, remainder = (r.result for r in responses[:2])
    assert full.sequence == 3  # the fourth chunk completed the first 1000 samples
    assert remainder.sequence == 4  # the flush is tagged with the last input
    received = [audio_samples(r.data_outputs["chunker"]) for r in (full, remainder)]
    assert [len(samples) for samples in received] == [1000, 500]
    np.testing.assert_array_equal(np.concatenate(received), sent)
    assert responses[-1].closed.reason == "Client requested close"


async def test_stream_half_close_gets_closed(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_stream(server) as stream:
            ready = await stream.open_session(init(CHUNKER))
            samples = np.full(300, 0.25, dtype=np.float32)
            await stream.send(chunk(audio_buffer(samples), 0, node_id="chunker"))
            await stream.end()  # no control message
            responses = await stream.recv_all()
            await stream.finish()

    assert [kind(r) for r in responses] == ["result", "closed"]
    np.testing.assert_array_equal(
        audio_samples(responses[0].result.data_outputs["chunker"]), samples
    )
    assert responses[-1].closed.session_id == ready.session_id
    assert responses[-1].closed.reason


async def test_stream_cancel_gets_closed(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_stream(server) as stream:
            ready = await stream.open_session(init(CHUNKER))
            samples = np.zeros(300, dtype=np.float32)
            await stream.send(chunk(audio_buffer(samples), 0, node_id="chunker"))
            await stream.send(control(CANCEL), end=True)
            responses = await stream.recv_all()
            await stream.finish()

    # CANCEL stops at once: the chunker's partial 300 samples are not flushed.
    assert [kind(r) for r in responses] == ["closed"]
    assert responses[0].closed.reason == "Client requested cancel"
    assert responses[0].closed.session_id == ready.session_id


async def test_stream_deprecated_audio_chunk_accepted(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_stream(server) as stream:
            await stream.open_session()
            samples = np.array([0.5, -0.5, 0.25], dtype=np.float32)
            legacy = spb.AudioChunk(node_id="pass", buffer=audio_buffer(samples).audio, sequence=7)
            await stream.send(spb.StreamRequest(audio_chunk=legacy))
            await stream.send(control(CLOSE), end=True)
            responses = await stream.recv_all()
            await stream.finish()

    assert [kind(r) for r in responses] == ["result", "closed"]
    assert responses[0].result.sequence == 7
    np.testing.assert_array_equal(audio_samples(responses[0].result.data_outputs["pass"]), samples)


async def _pass_audio(server: ServerAddress, buffer: pb.DataBuffer) -> np.ndarray:
    async with raw_stream(server) as stream:
        await stream.open_session()
        await stream.send(chunk(buffer, 0))
        await stream.send(control(CLOSE), end=True)
        responses = await stream.recv_all()
        await stream.finish()
    assert [kind(r) for r in responses] == ["result", "closed"]
    return audio_samples(responses[0].result.data_outputs["pass"])


async def test_audio_i16_decoded(server: ServerAddress) -> None:
    ints = np.array([0, 1, -1, 16384, -16384, 32767, -32768], dtype=np.int16)
    with trio.fail_after(TIMEOUT):
        received = await _pass_audio(server, audio_buffer(ints, fmt=pb.AUDIO_FORMAT_I16))
    expected = ints.astype(np.float64) / 32768
    np.testing.assert_array_equal(received, expected.astype(np.float32))


async def test_audio_i32_decoded(server: ServerAddress) -> None:
    ints = np.array([0, 1, -1, 2**30, -(2**30), 2**31 - 1, -(2**31), 123_456_789], dtype=np.int32)
    with trio.fail_after(TIMEOUT):
        received = await _pass_audio(server, audio_buffer(ints, fmt=pb.AUDIO_FORMAT_I32))
    expected = ints.astype(np.float64) / 2147483648
    np.testing.assert_allclose(received, expected, rtol=1e-7, atol=0)
    assert received[3] == 0.5
    assert received[6] == -1.0


async def test_audio_num_samples_mismatch_is_validation(server: ServerAddress) -> None:
    samples = np.zeros(100, dtype=np.float32)
    with trio.fail_after(TIMEOUT):
        await expect_stream_error(
            server,
            [init(), chunk(audio_buffer(samples, num_samples=99), 0)],
            pb.ERROR_TYPE_VALIDATION,
            "num_samples",
        )


async def test_audio_i16_stereo_decoded(server: ServerAddress) -> None:
    frames = np.array([[100, -100], [32767, -32768], [0, 1]], dtype=np.int16)
    buffer = audio_buffer(frames.ravel(), fmt=pb.AUDIO_FORMAT_I16, channels=2)
    assert buffer.audio.num_samples == 6  # all channels
    with trio.fail_after(TIMEOUT):
        received = await _pass_audio(server, buffer)
    np.testing.assert_array_equal(received, (frames.ravel() / 32768).astype(np.float32))


async def test_stream_named_buffers_first_entry_delivered(server: ServerAddress) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_stream(server) as stream:
            await stream.open_session()
            named = spb.DataChunk(
                node_id="pass", named_buffers={"only": text_buffer("named")}, sequence=3
            )
            await stream.send(spb.StreamRequest(data_chunk=named))
            await stream.send(control(CLOSE), end=True)
            responses = await stream.recv_all()
            await stream.finish()
    assert [kind(r) for r in responses] == ["result", "closed"]
    assert responses[0].result.sequence == 3
    assert responses[0].result.data_outputs["pass"].text.text_data == b"named"


async def test_stream_large_chunks_round_trip(server: ServerAddress) -> None:
    """6.4 MB each way: HTTP/2 flow control keeps both directions moving."""
    count, size = 100, 16_000
    received: list[spb.StreamResponse] = []
    with trio.fail_after(TIMEOUT):
        async with raw_stream(server) as stream:
            await stream.open_session()

            async def read_all() -> None:
                received.extend(await stream.recv_all())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                for sequence in range(count):
                    samples = np.full(size, sequence / count, dtype=np.float32)
                    await stream.send(chunk(audio_buffer(samples), sequence))
                await stream.send(control(CLOSE), end=True)
            await stream.finish()

    results = [r.result for r in received if kind(r) == "result"]
    assert [r.sequence for r in results] == list(range(count))
    for result in results:
        samples = audio_samples(result.data_outputs["pass"])
        assert samples.size == size
        assert samples[0] == np.float32(result.sequence / count)
    assert [r.metrics.chunks_processed for r in received if kind(r) == "metrics"] == list(
        range(10, count + 1, 10)
    )
    assert kind(received[-1]) == "closed"


async def test_stream_concurrent_sessions_isolated(server: ServerAddress) -> None:
    outcomes: dict[int, list[spb.StreamResponse]] = {}
    session_ids: set[str] = set()

    async def one_session(index: int) -> None:
        async with raw_stream(server) as stream:
            ready = await stream.open_session(init(CHAIN))
            session_ids.add(ready.session_id)
            for sequence in range(15):
                await stream.send(chunk(text_buffer(f"{index}:{sequence}"), sequence, "a"))
                await trio.lowlevel.checkpoint()
            await stream.send(control(CLOSE), end=True)
            outcomes[index] = await stream.recv_all()
            await stream.finish()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for index in range(6):
                nursery.start_soon(one_session, index)

    assert len(session_ids) == 6
    for index, responses in outcomes.items():
        texts = [
            r.result.data_outputs["b"].text.text_data.decode()
            for r in responses
            if kind(r) == "result"
        ]
        assert texts == [f"{index}:{sequence}" for sequence in range(15)]
        assert responses[-1].closed.reason == "Client requested close"


# --------------------------------------------------------------------------- drain


def collect_unraisable() -> list[str]:
    """Run the garbage collector and return what it reported as unraisable.

    A server that stops without closing its connections leaves sockets whose
    ResourceWarning would otherwise surface in whichever test runs next.
    """
    seen: list[Any] = []
    previous, sys.unraisablehook = sys.unraisablehook, seen.append
    try:
        gc.collect()
    finally:
        sys.unraisablehook = previous
    return [str(report.exc_value) for report in seen]


@attrs.define
class Drained:
    """What a client with a live session saw when the server shut down."""

    ready: spb.StreamReady | None = None
    responses: list[spb.StreamResponse] = attrs.Factory(list)
    ending: str = "still open"  # or "OK", a gRPC status name, "connection lost"
    leaks: list[str] = attrs.Factory(list)


async def drain_live_session(transport: str) -> Drained:
    """Run a server, open a session, set the server's shutdown event; record the outcome."""
    config = make_config(drain_timeout=1.0, transport=transport)
    drained, shutdown = Drained(), trio.Event()
    try:
        async with trio.open_nursery() as server_nursery:
            address = await server_nursery.start(serve, config, shutdown)
            async with open_channel(address) as channel, open_raw_stream(channel) as stream:
                drained.ready = await stream.open_session()
                shutdown.set()
                with trio.move_on_after(config.drain_timeout + 1):
                    try:
                        while (response := await stream.recv()) is not None:
                            drained.responses.append(response)
                        await stream.finish()
                        drained.ending = "OK"
                    except GRPCError as error:
                        drained.ending = error.status.name
                    except StreamTerminatedError:
                        drained.ending = "connection lost"
                if drained.ending == "still open":
                    await aio(stream.stream.cancel)()  # give up on the call
    finally:
        drained.leaks = collect_unraisable()
    return drained


async def test_stream_server_drain_sends_closed(transport: str) -> None:
    with trio.fail_after(TIMEOUT):
        drained = await drain_live_session(transport)
    assert drained.ready is not None
    assert [kind(r) for r in drained.responses[:1]] == ["closed"]
    closed = drained.responses[0].closed
    assert closed.session_id == drained.ready.session_id
    assert "shutting down" in closed.reason


async def test_stream_server_drain_ends_live_call(transport: str) -> None:
    with trio.fail_after(TIMEOUT):
        drained = await drain_live_session(transport)
    assert [kind(r) for r in drained.responses] == ["closed"]
    assert drained.ending == "OK"
    assert not drained.leaks
