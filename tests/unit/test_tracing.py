"""Traces: the span tree of a session's turns, from the tracker's moments (SDK in memory)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from remotemedia import Audio
from remotemedia.config import ConfigError
from remotemedia.events import (
    FinalTranscript,
    Interrupted,
    ReplySentence,
    SpeechEnded,
    SpeechStarted,
    TurnDone,
    VoiceActivity,
)
from remotemedia.executors.reports import WorkerCall
from remotemedia.observability import NodeRole, TurnTracker
from remotemedia.observability.tracing import Tracing, tracing_from_env
from remotemedia.service.metrics import ServerMetrics
from remotemedia.service.turns import TurnReporter
from remotemedia.service.wire import CallOrigin

VAD = NodeRole("vad", "SileroVADNode")
ASR = NodeRole("asr", "WhisperNode")
BOT = NodeRole("bot", "ConversationCoordinatorNode")
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


def clock() -> float:
    """The session's clock, standing still: every time converts with the same offset."""
    return 100.0


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Iterator[Tracing]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider, clock=clock)
    yield tracing
    tracing.shutdown()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def conversation(tracing: Tracing, traceparent: str | None = None) -> None:
    """A scripted converse session: a turn cut by the user, then one replied in full."""
    trace = tracing.start_session("s1", "converse", "grpc", traceparent)
    assert trace is not None
    reporter = TurnReporter.for_session(ServerMetrics(), "s1", "converse", trace)
    tracker = TurnTracker(reporter, replies=True)
    for index in range(400):
        tracker.audio_in(index * 0.02, 0.02)
    tracker.output(VAD, 0.80, VoiceActivity(transitions=(SpeechEnded(500.0),)), 0.79)
    tracker.output(ASR, 1.00, FinalTranscript("hi", end_ms=500.0, utterance="u1"), 0.85)
    sent_ns = trace._ns(0.86)
    worked = (trace._ns(0.87), trace._ns(0.98))
    reporter.worker_call(WorkerCall("asr", "WhisperNode", 4242, sent_ns, 0.14, worked))
    tracker.output(BOT, 1.40, ReplySentence("bot-t1", "Hello there."))
    tracker.output(BOT, 1.55, Audio(np.zeros(10, np.float32), 16_000, metadata={"turn": "bot-t1"}))
    tracker.output(VAD, 3.00, VoiceActivity(transitions=(SpeechStarted(2500.0),)), 2.99)
    tracker.output(BOT, 2.80, Interrupted("bot-t1", 900, ("llm", "audio")))
    tracker.output(VAD, 4.00, VoiceActivity(transitions=(SpeechEnded(3600.0),)), 3.99)
    tracker.output(ASR, 4.20, FinalTranscript("stop", end_ms=3600.0, utterance="u2"), 4.1)
    tracker.output(BOT, 4.50, ReplySentence("bot-t2", "Sure."))
    tracker.output(BOT, 6.00, TurnDone("bot-t2", 700, "Sure."))
    tracker.finish(7.0)
    trace.end("closed")


def test_a_sessions_turns_calls_and_worker_make_one_tree(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    conversation(tracing)
    spans = by_name(exporter.get_finished_spans())
    (session,) = spans["remotemedia.session"]
    first, second = sorted(spans["remotemedia.turn"], key=lambda s: s.start_time or 0)
    assert parent_of(session) is None
    assert {parent_of(first), parent_of(second)} == {session.context.span_id}
    children = {
        span.name: span
        for span in exporter.get_finished_spans()
        if parent_of(span) == first.context.span_id
    }
    assert set(children) == {
        "vad SileroVADNode",
        "transcribe WhisperNode",
        "reply_text ConversationCoordinatorNode",
        "reply_audio ConversationCoordinatorNode",
        "interrupt ConversationCoordinatorNode",
        "remotemedia.reply",
    }
    # The Whisper call's work in its worker process, parented across the boundary.
    (worker,) = spans["worker WhisperNode"]
    assert parent_of(worker) == children["transcribe WhisperNode"].context.span_id
    assert worker.attributes is not None
    assert worker.attributes["process.pid"] == 4242
    assert (worker.end_time or 0) - (worker.start_time or 0) == pytest.approx(0.11e9, rel=1e-3)
    # The span of a call covers the call: the transcript's call began at 0.85 s.
    transcribe = children["transcribe WhisperNode"]
    assert (transcribe.end_time or 0) - (transcribe.start_time or 0) == pytest.approx(
        0.15e9, rel=1e-3
    )
    # The cut reply is marked interrupted; the next one is not.
    cut, whole = sorted(spans["remotemedia.reply"], key=lambda s: s.start_time or 0)
    assert cut.attributes is not None
    assert whole.attributes is not None
    assert cut.attributes["remotemedia.reply.interrupted"] is True
    assert cut.attributes["remotemedia.reply.spoken_ms"] == 900
    assert [event.name for event in cut.events] == ["interrupted"]
    assert whole.attributes["remotemedia.reply.interrupted"] is False
    assert first.attributes is not None
    assert first.attributes["remotemedia.turn.outcome"] == "interrupted"
    # The turn starts where the speech ended (the chunk holding 500 ms arrived at 0.48 s).
    assert (first.end_time or 0) - (first.start_time or 0) == pytest.approx(2.32e9, rel=1e-3)
    assert first.attributes["remotemedia.turn.stage.vad_s"] == pytest.approx(0.32)


def test_a_clients_traceparent_makes_the_session_a_child_of_its_trace(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    conversation(tracing, f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
    (session,) = by_name(exporter.get_finished_spans())["remotemedia.session"]
    assert f"{session.context.trace_id:032x}" == CLIENT_TRACE
    assert session.parent is not None
    assert f"{session.parent.span_id:016x}" == CLIENT_SPAN
    assert {f"{span.context.trace_id:032x}" for span in exporter.get_finished_spans()} == {
        CLIENT_TRACE
    }


def test_an_unsampled_session_is_not_traced_at_all(exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert Tracing(provider).start_session("s1", "transcribe", "grpc") is None


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", True),
        (f"00-{CLIENT_TRACE.upper()}-{CLIENT_SPAN}-00".encode(), True),
        ("00-not-a-trace-01", False),
        (None, False),
        (42, False),
    ],
)
def test_a_call_keeps_only_a_well_formed_traceparent(header: object, kept: bool) -> None:
    origin = CallOrigin()
    origin.take_traceparent(header)
    assert (origin.traceparent is not None) == kept


def test_tracing_is_off_unless_the_otel_variables_turn_it_on() -> None:
    assert tracing_from_env({}) is None
    assert tracing_from_env({"OTEL_TRACES_EXPORTER": "none"}) is None
    tracing = tracing_from_env({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing is not None
    tracing.shutdown()
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        tracing_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL='grpc'.*http/protobuf"):
        tracing_from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
