"""OpenTelemetry traces: a trace per session, a span per turn, spans for the calls in it.

Off unless configured by the standard variables: ``OTEL_TRACES_EXPORTER=otlp`` (the
``remotemedia[otlp]`` extra; ``OTEL_EXPORTER_OTLP_ENDPOINT`` and the other
``OTEL_EXPORTER_OTLP_*`` say where) or ``console``; ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG`` choose the sampling (``parentbased_traceidratio`` with
``0.01`` keeps 1 % of sessions; a client's sampled ``traceparent`` is always kept);
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` name the server. Nothing of
OpenTelemetry's SDK is imported until then.

The tree of one session::

    remotemedia.session             (child of the client's traceparent, if it sent one)
    └─ remotemedia.turn             end of speech → the turn's end; its stages as attributes
       ├─ vad SileroVADNode         the VAD's call that reported the end
       ├─ transcribe WhisperNode    the call that made the transcript
       │  └─ worker WhisperNode     the node's work inside its worker process (pid)
       ├─ reply_text ...            the call (or, for a node with tasks of its own, the
       ├─ reply_audio ...           stage) that made the reply's first text, first audio
       └─ remotemedia.reply         first reply text → the turn's end; interrupted or not

Only the calls whose outputs ended a stage get spans: the per-chunk calls in between
(a VAD sees fifty chunks a second) are what the metrics aggregate; a span each would
cost more than the work it describes.

A worker process does not export spans itself (its Python environment may not have
OpenTelemetry, and each would need the exporter's settings): its end of input carries
when its node worked (``time.time_ns()``, see :mod:`remotemedia.ipc.codec`), and the
runtime records that span, parented across the process boundary to the call that sent
the input.

Times: the session's clock (``time.perf_counter`` on a server) is turned into the
wall clock OpenTelemetry wants by the offset between the two when a span is recorded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from remotemedia.config import ConfigError
from remotemedia.observability.turns import NodeRole, Turn

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = ["SessionTrace", "Tracing", "tracing_from_env"]

EXPORTERS = ("none", "otlp", "console")
"""What ``OTEL_TRACES_EXPORTER`` may say (``none``, the default: no tracing)."""
_SCOPE = "remotemedia"


def tracing_from_env(env: Mapping[str, str] = os.environ) -> Tracing | None:
    """The server's tracing as the ``OTEL_*`` variables configure it; None when off.

    Raises:
        ConfigError: ``OTEL_TRACES_EXPORTER`` names an exporter this server has not,
            or ``otlp`` without the ``remotemedia[otlp]`` extra installed.
    """
    name = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower() or "none"
    if name == "none":
        return None
    if name not in EXPORTERS:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={name!r}: this server exports traces with "
            f"{', '.join(EXPORTERS[1:])} (or none, the default)."
        )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if name == "console":
        exporter = ConsoleSpanExporter()
    else:
        for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = env.get(variable, "http/protobuf")
            if protocol != "http/protobuf":
                raise ConfigError(
                    f"{variable}={protocol!r}: this server exports OTLP over HTTP "
                    "(http/protobuf, port 4318 by default); unset it or set http/protobuf."
                )
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(
                "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: "
                "pip install 'remotemedia[otlp]'."
            ) from None
        exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* itself
    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG), the resource from
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES: the SDK reads both.
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "remotemedia")})
    provider = TracerProvider(resource=resource)
    # Spans leave in batches from the SDK's own thread: the session's task never
    # waits for the network. shutdown() (when the server stops) flushes it.
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider)


class Tracing:
    """The server's tracer: starts a :class:`SessionTrace` for each session it samples.

    Args:
        provider: The OpenTelemetry SDK's tracer provider (its processors export).
        clock: The clock session times are read from (the sessions' clock).
    """

    def __init__(
        self, provider: TracerProvider, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer(_SCOPE)
        self.clock = clock

    def start_session(
        self,
        session_id: str,
        pipeline: str,
        edge: str,
        traceparent: str | None = None,
    ) -> SessionTrace | None:
        """Start the session's span; None if it is not sampled (then nothing else is traced).

        ``traceparent`` (W3C) makes it a child of the client's trace.
        """
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent = (
            TraceContextTextMapPropagator().extract({"traceparent": traceparent})
            if traceparent
            else None
        )
        span = self.tracer.start_span(
            "remotemedia.session",
            context=parent,
            attributes={
                "remotemedia.session.id": session_id,
                "remotemedia.pipeline": pipeline,
                "remotemedia.edge": edge,
            },
        )
        if not span.is_recording():
            return None
        return SessionTrace(self, span)

    def shutdown(self) -> None:
        """Export what is left and stop the exporter (bounded by the SDK's timeouts)."""
        self.provider.shutdown()


class SessionTrace:
    """The spans of one sampled session (see the module's tree)."""

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self._tracing = tracing
        self._tracer = tracing.tracer
        self.span = span
        self._turns: dict[int, Span] = {}  # open turn spans, by turn index
        self._replies: dict[int, Span] = {}
        # per node id: its latest call span, when that call began (ns), its node type
        self._last_call: dict[str, tuple[Span, int, str]] = {}

    def _ns(self, at: float) -> int:
        """A time of the session's clock as OpenTelemetry's (ns since the epoch)."""
        return time.time_ns() - int((self._tracing.clock() - at) * 1e9)

    def _child(self, parent: Span, name: str, start_ns: int, **attributes: Any) -> Span:
        from opentelemetry import trace

        return self._tracer.start_span(
            name,
            context=trace.set_span_in_context(parent),
            start_time=start_ns,
            attributes=attributes,
        )

    def _turn_span(self, turn: Turn, start: float) -> Span:
        span = self._turns.get(turn.index)
        if span is None:
            begin = turn.speech_end if turn.speech_end is not None else start
            span = self._child(
                self.span,
                "remotemedia.turn",
                self._ns(min(begin, start)),
                **{"remotemedia.turn.index": turn.index},
            )
            self._turns[turn.index] = span
        return span

    def moment(
        self, turn: Turn, stage: str, role: NodeRole, started: float | None, at: float
    ) -> None:
        """A span for the call that ended ``stage`` (see the module's tree)."""
        before = {
            "vad": turn.speech_end,
            "transcribe": turn.decided,
            "reply_text": turn.transcribed,
            "reply_audio": turn.reply_text,
            "interrupt": turn.speech_start,
        }.get(stage)
        start = started if started is not None else before if before is not None else at
        parent = self._turn_span(turn, start)
        span = self._child(
            parent,
            f"{stage} {role.node_type}",
            self._ns(start),
            **{
                "remotemedia.stage": stage,
                "remotemedia.node.id": role.node_id,
                "remotemedia.node.type": role.node_type,
            },
        )
        end_ns = self._ns(at)
        span.end(end_time=end_ns)
        if started is not None:
            self._last_call[role.node_id] = (span, self._ns(started), role.node_type)
        if stage == "reply_text" and turn.index not in self._replies:
            self._replies[turn.index] = self._child(parent, "remotemedia.reply", end_ns)

    def worker_call(
        self, node_id: str, pid: int | None, sent_ns: int, worked_ns: tuple[int, int]
    ) -> None:
        """The node's work in its worker, as a child of the call span that sent it there.

        Only for a call that has a span (one that ended a stage), and only if the
        worker's input was sent during it (1 ms allowed between the two clocks' reads).
        """
        last = self._last_call.get(node_id)
        if last is None or sent_ns < last[1] - 1_000_000:
            return
        span, _, node_type = self._last_call.pop(node_id)
        worker = self._child(
            span,
            f"worker {node_type}",
            worked_ns[0],
            **{"process.pid": pid or 0, "remotemedia.node.id": node_id},
        )
        worker.end(end_time=worked_ns[1])

    def turn_ended(self, turn: Turn) -> None:
        """End the turn's span (and its reply's), with the turn's stages as attributes."""
        span = self._turns.pop(turn.index, None)
        reply = self._replies.pop(turn.index, None)
        if span is None:
            return  # a turn with no timed moment
        end_ns = self._ns(turn.ended) if turn.ended is not None else time.time_ns()
        if reply is not None:
            interrupted = turn.outcome == "interrupted"
            reply.set_attribute("remotemedia.reply.interrupted", interrupted)
            if turn.spoken_ms is not None:
                reply.set_attribute("remotemedia.reply.spoken_ms", turn.spoken_ms)
            if interrupted:
                reply.add_event("interrupted", timestamp=end_ns)
            reply.end(end_time=end_ns)
        span.set_attribute("remotemedia.turn.outcome", turn.outcome)
        span.set_attribute("remotemedia.turn.speculation", turn.speculation)
        for stage, seconds in turn.stages().items():
            span.set_attribute(f"remotemedia.turn.stage.{stage}_s", seconds)
        for until, seconds in turn.totals().items():
            span.set_attribute(f"remotemedia.turn.latency.{until}_s", seconds)
        span.end(end_time=end_ns)

    def end(self, outcome: str, error_type: str | None = None) -> None:
        """End the session's span (any turn still open first)."""
        from opentelemetry.trace import Status, StatusCode

        for index in list(self._turns):
            self._turns.pop(index).end()
        for index in list(self._replies):
            self._replies.pop(index).end()
        self.span.set_attribute("remotemedia.session.outcome", outcome)
        if error_type is not None:
            self.span.set_status(Status(StatusCode.ERROR, error_type))
        self.span.end()
