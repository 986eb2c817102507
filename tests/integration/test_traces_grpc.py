"""Traces of real sessions: real models, real worker processes, real gRPC, a real OTLP socket.

The SDK's in-memory exporter shows the tree of a ``transcribe`` session (in the
client's trace, the Whisper call's work in its worker process a child of the call)
and of a ``converse`` session whose first reply the user cuts; then ``remotemedia
serve``, configured by the standard ``OTEL_*`` variables, exports over OTLP/HTTP to a
receiver in the test.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import pytest
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from remotemedia import Json
from remotemedia.cli.converse import converse
from remotemedia.cli.run import split_chunks
from remotemedia.client import open_trio_client
from remotemedia.config import ServerConfig
from remotemedia.observability.tracing import Tracing
from remotemedia.testing import synthesize_speech
from remotemedia.transport.serving import serve
from tests.processes import SERVE, parse_listening, reap

pytest.importorskip("piper", reason="needs remotemedia[piper]")
pytest.importorskip("faster_whisper", reason="needs remotemedia[whisper]")
pytestmark = pytest.mark.slow

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SENTENCES = ("The weather is lovely today.", "Please send me the report tomorrow.")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


def _tracing(exporter: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider)


def _children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> dict[str, ReadableSpan]:
    return {
        span.name: span
        for span in spans
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    }


async def _transcribe(address: str, traceparent: str | None = None) -> int:
    """Stream the sentences (3x real time); how many transcripts came back."""
    sample = synthesize_speech(SENTENCES, gap_s=1.2, lead_s=0.3, tail_s=1.0)
    transcripts = 0
    async with (
        open_trio_client(address) as client,
        client.stream("transcribe", traceparent=traceparent) as session,
    ):

        async def feed() -> None:
            start = trio.current_time()
            for index, chunk in enumerate(split_chunks(sample.audio, 20.0)):
                await trio.sleep_until(start + index * 0.02 / 3)
                await session.send(chunk)
            await session.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            async for result in session:
                if isinstance(result.data, Json) and "text" in result.data.value:
                    transcripts += 1
    return transcripts


async def test_a_transcribe_session_is_one_tree_in_the_clients_trace(
    exporter: InMemorySpanExporter,
) -> None:
    shutdown = trio.Event()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            tracing = _tracing(exporter)
            server = await nursery.start(
                functools.partial(serve, tracing=tracing),
                ServerConfig(bind="127.0.0.1:0"),
                shutdown,
            )
            traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
            count = await _transcribe(f"{server.host}:{server.port}", traceparent)
            shutdown.set()
    assert count == len(SENTENCES)
    spans = exporter.get_finished_spans()
    (session,) = [span for span in spans if span.name == "remotemedia.session"]
    assert f"{session.context.trace_id:032x}" == CLIENT_TRACE
    assert session.parent is not None
    assert f"{session.parent.span_id:016x}" == CLIENT_SPAN
    assert session.attributes is not None
    assert session.attributes["remotemedia.pipeline"] == "transcribe"
    assert session.attributes["remotemedia.session.outcome"] == "closed"
    turns = [span for span in spans if span.name == "remotemedia.turn"]
    assert len(turns) == len(SENTENCES)
    for turn in turns:
        assert turn.parent is not None
        assert turn.parent.span_id == session.context.span_id
        calls = _children(spans, turn)
        assert set(calls) == {"vad SileroVADNode", "transcribe WhisperNode"}, calls
        # Whisper ran in a worker process: its work there is a child of the call.
        (worker,) = _children(spans, calls["transcribe WhisperNode"]).values()
        assert worker.name == "worker WhisperNode"
        assert worker.attributes is not None
        assert worker.attributes["process.pid"] not in (0, os.getpid())
        call = calls["transcribe WhisperNode"]
        assert (call.start_time or 0) <= (worker.start_time or 0)
        assert (worker.end_time or 0) <= (call.end_time or 0) + 1_000_000  # 1 ms of clocks
        assert turn.attributes is not None
        assert turn.attributes["remotemedia.turn.outcome"] == "transcribed"


async def test_a_converse_session_marks_the_reply_the_user_cut(
    exporter: InMemorySpanExporter,
) -> None:
    shutdown = trio.Event()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            tracing = _tracing(exporter)
            server = await nursery.start(
                functools.partial(serve, tracing=tracing),
                ServerConfig(bind="127.0.0.1:0"),
                shutdown,
            )
            talk = await converse(f"{server.host}:{server.port}")
            shutdown.set()
    assert talk.interrupted, talk.timeline
    spans = exporter.get_finished_spans()
    turns = sorted(
        (span for span in spans if span.name == "remotemedia.turn"),
        key=lambda span: span.start_time or 0,
    )
    outcomes = [(turn.attributes or {}).get("remotemedia.turn.outcome") for turn in turns]
    assert outcomes[0] == "interrupted", outcomes
    assert "replied" in outcomes[1:], outcomes
    cut = _children(spans, turns[0])
    assert {"transcribe WhisperNode", "remotemedia.reply"} <= set(cut), cut
    assert any(name.startswith("interrupt ") for name in cut), cut
    reply = cut["remotemedia.reply"]
    assert reply.attributes is not None
    assert reply.attributes["remotemedia.reply.interrupted"] is True
    assert [event.name for event in reply.events] == ["interrupted"]
    replied = turns[outcomes.index("replied")]
    whole = _children(spans, replied)["remotemedia.reply"]
    assert (whole.attributes or {})["remotemedia.reply.interrupted"] is False


# --------------------------------------------------------------------------- OTLP


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[int, list[ExportTraceServiceRequest]]]:
    """An OTLP/HTTP trace receiver on 127.0.0.1: (its port, the requests it took)."""
    received: list[ExportTraceServiceRequest] = []

    async def serve_connection(stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        body = b""
        async with stream:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    connection.receive_data(data)
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    received.append(ExportTraceServiceRequest.FromString(body))
                    reply = ExportTraceServiceResponse().SerializeToString()
                    headers = [
                        ("content-type", "application/x-protobuf"),
                        ("content-length", str(len(reply))),
                    ]
                    await stream.send_all(
                        connection.send(h11.Response(status_code=200, headers=headers))
                        + connection.send(h11.Data(data=reply))
                        + connection.send(h11.EndOfMessage())
                    )
                    connection.start_next_cycle()
                    body = b""
                elif isinstance(event, h11.ConnectionClosed):
                    return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, host="127.0.0.1"), serve_connection, 0
        )
        port = listeners[0].socket.getsockname()[1]
        yield port, received
        nursery.cancel_scope.cancel()


def _span_names(requests: list[ExportTraceServiceRequest]) -> tuple[set[str], set[str]]:
    """The names of the spans received, and the service names they came from."""
    names, services = set(), set()
    for request in requests:
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                names.update(span.name for span in scope_spans.spans)
    return names, services


async def test_a_served_session_is_exported_over_otlp_to_a_real_socket() -> None:
    with trio.fail_after(120):
        async with otlp_receiver() as (port, received):
            env: dict[str, Any] = {
                **os.environ,
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "OTEL_SERVICE_NAME": "remotemedia-under-test",
            }
            process = await trio.lowlevel.open_process(
                [*SERVE[:-1], "127.0.0.1:0"], stdout=subprocess.PIPE, env=env
            )
            try:
                assert process.stdout is not None
                line = b""
                while b"\n" not in line:
                    chunk = await process.stdout.receive_some(4096)
                    assert chunk, "the server exited before listening"
                    line += chunk
                address, _ = parse_listening(line.decode())
                assert await _transcribe(address) == len(SENTENCES)
                process.send_signal(signal.SIGTERM)  # the drain flushes the last spans
                assert await process.wait() == 0
            finally:
                await reap(process)
            names, services = _span_names(received)
    assert {"remotemedia.session", "remotemedia.turn", "worker WhisperNode"} <= names, names
    assert services == {"remotemedia-under-test"}
