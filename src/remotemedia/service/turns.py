"""A session's turns as the server reports them: metrics and one log line per turn.

The session's :class:`~remotemedia.observability.TurnTracker` hands each finished
turn to a :class:`TurnReporter`, which records it in the server's histograms and logs
it, from the same :class:`~remotemedia.observability.Turn`, so the log line and the
metrics always say the same thing. The reporter keeps the session's last turns for
whoever shows live sessions (``remotemedia top``).
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import attrs

from remotemedia.executors.reports import WorkerCall
from remotemedia.observability import NodeRole, Turn
from remotemedia.observability.tracing import SessionTrace
from remotemedia.service.metrics import ServerMetrics

__all__ = ["RECENT_TURNS", "TurnReporter", "turn_fields"]

logger = logging.getLogger("remotemedia.turns")

RECENT_TURNS = 5
"""Finished turns a session keeps for live views."""


def turn_fields(turn: Turn) -> dict[str, Any]:
    """A turn's structured fields: what its log line carries, in seconds like the metrics."""
    fields: dict[str, Any] = {
        "turn": turn.index,
        "outcome": turn.outcome,
        "speculation": turn.speculation,
        "stages": {stage: round(s, 6) for stage, s in turn.stages().items()},
        "latency": {until: round(s, 6) for until, s in turn.totals().items()},
    }
    if turn.reply is not None:
        fields["reply"] = turn.reply
    if turn.user_chars is not None:
        fields["user_chars"] = turn.user_chars
    if turn.spoken_ms is not None:
        fields["spoken_ms"] = turn.spoken_ms
    return fields


def _describe(fields: dict[str, Any]) -> str:
    """The text form of a turn's fields: ``vad 312 ms, transcribe 120 ms (hit), ...``."""
    parts = []
    for stage, seconds in fields["stages"].items():
        part = f"{stage} {seconds * 1000:.0f} ms"
        if stage == "transcribe" and fields["speculation"] != "off":
            part += f" (speculation {fields['speculation']})"
        parts.append(part)
    for until, seconds in fields["latency"].items():
        parts.append(f"end of speech to {until.replace('_', ' ')} {seconds * 1000:.0f} ms")
    return "; ".join(parts) or "no timed stages"


@attrs.define
class TurnReporter:
    """Records each finished turn of one session in the metrics and the log.

    Attributes:
        metrics: The server's metrics.
        session_id: The session.
        pipeline: Its pipeline's name, as the metrics label it (bounded).
        recent: The session's last finished turns, newest last.
        outcomes: How many of its turns ended how.
        trace: The session's trace, if it is sampled: it gets the turns' spans.
    """

    metrics: ServerMetrics
    session_id: str
    pipeline: str
    recent: collections.deque[Turn] = attrs.field(
        factory=lambda: collections.deque(maxlen=RECENT_TURNS)
    )
    outcomes: collections.Counter[str] = attrs.field(factory=collections.Counter)
    trace: SessionTrace | None = None

    @classmethod
    def for_session(
        cls,
        metrics: ServerMetrics,
        session_id: str,
        pipeline: str,
        trace: SessionTrace | None = None,
    ) -> TurnReporter:
        """A reporter for a session of ``pipeline`` (its name bounded as a label)."""
        return cls(metrics, session_id, metrics.pipeline(pipeline or "unnamed"), trace=trace)

    def moment(
        self, turn: Turn, stage: str, role: NodeRole, started: float | None, at: float
    ) -> None:
        """A stage of ``turn`` ended: its span, if the session is traced."""
        if self.trace is not None:
            self.trace.moment(turn, stage, role, started, at)

    def worker_call(self, call: WorkerCall) -> None:
        """An input's trip through a worker: the metrics, and its span if traced."""
        self.metrics.worker_call(call)
        if self.trace is not None and call.worked_ns is not None:
            self.trace.worker_call(call.node_id, call.pid, call.sent, call.worked_ns)

    def turn_ended(self, turn: Turn) -> None:
        """Record ``turn``: its stages, its waits, its outcome; then log it."""
        metrics, pipeline = self.metrics, self.pipeline
        for stage, seconds in turn.stages().items():
            metrics.turn_stage.observe(
                seconds,
                pipeline=pipeline,
                stage=stage,
                node_type=turn.node_types.get(stage, ""),
                speculation=turn.speculation if stage == "transcribe" else "",
            )
        for until, seconds in turn.totals().items():
            metrics.turn_latency.observe(seconds, pipeline=pipeline, until=until)
        metrics.turns.inc(pipeline=pipeline, outcome=turn.outcome)
        if self.trace is not None:
            self.trace.turn_ended(turn)
        self.outcomes[turn.outcome] += 1
        self.recent.append(turn)
        if not logger.isEnabledFor(logging.INFO):
            return  # the fields and their text cost more than the metrics: only when logged
        fields = turn_fields(turn)
        logger.info(
            "Turn %d of session %s (%s) %s: %s.",
            turn.index,
            self.session_id,
            pipeline,
            turn.outcome,
            _describe(fields),
            extra={
                "fields": {
                    "event": "turn",
                    "session": self.session_id,
                    "pipeline": pipeline,
                    **fields,
                }
            },
        )

    def wasted(self, kind: str) -> None:
        """Count work of ``kind`` thrown away."""
        self.metrics.turn_wasted.inc(pipeline=self.pipeline, kind=kind)
