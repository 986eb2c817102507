"""Prometheus metrics: a small registry and the server's metrics (sans-IO).

Renders the Prometheus text exposition format (version 0.0.4). Metric names follow
the original runtime where they fit (``remotemedia_grpc_requests_total``,
``remotemedia_stream_chunks_total``, ...); labels never include session ids, which
would give every session its own time series.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from remotemedia.executors.reports import RECYCLED, RESTARTED, WorkerCall

__all__ = ["BoundedLabel", "Counter", "Gauge", "Histogram", "Registry", "ServerMetrics"]

LabelValues = tuple[str, ...]


def _format_labels(names: Sequence[str], values: LabelValues, extra: str = "") -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        """The exposition lines of every series."""
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the series with these labels."""
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """The current value of one series (0 if never incremented)."""
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        """The exposition lines of every series."""
        return [
            f"{self.name}{_format_labels(self.labels, key)} {_number(value)}"
            for key, value in sorted(self._values.items())
        ]


class Gauge(_Metric):
    """A value that goes up and down, set directly or read from a function at scrape time."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        *,
        read: Callable[[], Iterable[tuple[LabelValues, float]]] | None = None,
    ) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {}
        self._read = read

    def set(self, value: float, **labels: str) -> None:
        """Set the series with these labels."""
        self._values[self._key(labels)] = value

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (may be negative) to the series with these labels."""
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def samples(self) -> list[str]:
        """The exposition lines of every series (read at scrape time if a reader is set)."""
        values = dict(self._read()) if self._read is not None else self._values
        return [
            f"{self.name}{_format_labels(self.labels, key)} {_number(value)}"
            for key, value in sorted(values.items())
        ]


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        buckets: Sequence[float],
        labels: Sequence[str] = (),
    ) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[LabelValues, list[float]] = {}  # bucket counts + [sum, count]

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation."""
        key = self._key(labels) if labels or self.labels else ()
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = [0.0] * (len(self.buckets) + 2)
        index = bisect.bisect_left(self.buckets, value)  # the first bound >= value
        if index < len(self.buckets):
            series[index] += 1
        series[-2] += value
        series[-1] += 1

    def observer(self, **labels: str) -> Callable[[float], None]:
        """A function that records one observation in the series with these labels.

        For a hot path: the labels are resolved once, here, not at every observation.
        """
        key = self._key(labels) if labels or self.labels else ()
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = [0.0] * (len(self.buckets) + 2)
        buckets, last = self.buckets, len(self.buckets)
        find = bisect.bisect_left

        def observe(value: float) -> None:
            index = find(buckets, value)
            if index < last:
                series[index] += 1
            series[-2] += value
            series[-1] += 1

        return observe

    def count(self, **labels: str) -> int:
        """How many observations one series has."""
        series = self._series.get(self._key(labels) if self.labels else ())
        return int(series[-1]) if series else 0

    def sum(self, **labels: str) -> float:
        """The sum of one series' observations (0 if it has none)."""
        series = self._series.get(self._key(labels) if self.labels else ())
        return series[-2] if series else 0.0

    def samples(self) -> list[str]:
        """The exposition lines: cumulative buckets, sum and count of every series."""
        lines = []
        for key, series in sorted(self._series.items()):
            cumulative = 0.0
            for bound, count in zip(self.buckets, series, strict=False):
                cumulative += count
                labels = _format_labels(self.labels, key, f'le="{_number(bound)}"')
                lines.append(f"{self.name}_bucket{labels} {_number(cumulative)}")
            total = 'le="+Inf"'
            lines.append(
                f"{self.name}_bucket{_format_labels(self.labels, key, total)} {_number(series[-1])}"
            )
            lines.append(f"{self.name}_sum{_format_labels(self.labels, key)} {_number(series[-2])}")
            lines.append(
                f"{self.name}_count{_format_labels(self.labels, key)} {_number(series[-1])}"
            )
        return lines


_MetricT = TypeVar("_MetricT", bound=_Metric)


class Registry:
    """A set of metrics rendered together."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: _MetricT) -> _MetricT:
        """Register a metric and return it."""
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        lines: list[str] = []
        for metric in self._metrics:
            lines += metric.header()
            lines += metric.samples()
        return "\n".join(lines) + "\n"


class BoundedLabel:
    """A label whose values come from clients (a pipeline's name), kept to ``limit`` values.

    The first ``limit`` distinct values pass; later ones become ``other``, so a client
    that names every session differently cannot grow the server's series without end.
    """

    OTHER = "other"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        """The label value to use for ``value``."""
        if value in self._seen:
            return value
        if len(self._seen) < self.limit:
            self._seen.add(value)
            return value
        return self.OTHER


LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
NODE_BUCKETS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
TURN_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_WORKER_REPLACED = {RESTARTED: "failed", RECYCLED: "memory"}
PIPELINE_NAMES = 32
"""Distinct pipeline names the turn metrics label (later ones: ``other``)."""


class ServerMetrics:
    """The metrics ``remotemedia serve`` exports."""

    def __init__(
        self,
        *,
        active_sessions: Callable[[], int] = lambda: 0,
        edge_depths: Callable[[], Iterable[tuple[LabelValues, float]]] = lambda: (),
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.registry = registry = Registry()
        self.requests = registry.add(
            Counter(
                "remotemedia_grpc_requests_total",
                "RPCs by method and outcome.",
                ("method", "status"),
            )
        )
        self.request_duration = registry.add(
            Histogram(
                "remotemedia_grpc_request_duration_seconds",
                "Duration of RPCs.",
                (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300),
                ("method",),
            )
        )
        self.active_streams = registry.add(
            Gauge(
                "remotemedia_grpc_active_streams",
                "Live StreamPipeline sessions.",
                read=lambda: [((), float(active_sessions()))],
            )
        )
        self.draining = registry.add(
            Gauge(
                "remotemedia_draining",
                "1 while the server drains (shutting down: no new sessions), else 0.",
                read=lambda: [((), 1.0 if draining() else 0.0)],
            )
        )
        self.refused = registry.add(
            Counter(
                "remotemedia_sessions_refused_total",
                "Sessions refused at admission: reason full (--max-sessions live) or draining.",
                ("reason",),
            )
        )
        self.errors = registry.add(
            Counter(
                "remotemedia_execution_errors_total",
                "Errors sent to clients, by type.",
                ("error_type",),
            )
        )
        self.chunks = registry.add(
            Counter("remotemedia_stream_chunks_total", "Input chunks by outcome.", ("status",))
        )
        self.chunk_latency = registry.add(
            Histogram(
                "remotemedia_stream_chunk_latency_seconds",
                "Time from an input chunk's arrival to its first result.",
                LATENCY_BUCKETS,
            )
        )
        self.dropped = registry.add(
            Counter(
                "remotemedia_stream_chunks_dropped_total",
                "Input chunks dropped, by reason.",
                ("reason",),
            )
        )
        self.node_time = registry.add(
            Histogram(
                "remotemedia_node_processing_seconds",
                "Time a node spends on one input.",
                NODE_BUCKETS,
                ("node_type",),
            )
        )
        self.node_wait = registry.add(
            Histogram(
                "remotemedia_node_queue_wait_seconds",
                "Time an input waits in a node's inbox before the node takes it.",
                NODE_BUCKETS,
                ("node_type",),
            )
        )
        self.node_events = registry.add(
            Counter(
                "remotemedia_node_events_total",
                "Events nodes count, by node type (speculations started, committed, cancelled).",
                ("node_type", "event"),
            )
        )
        self.edge_depth = registry.add(
            Gauge(
                "remotemedia_edge_queue_depth",
                "Items waiting in node inputs, summed over live sessions.",
                ("node_type",),
                read=edge_depths,
            )
        )
        self.pipeline = BoundedLabel(PIPELINE_NAMES)
        self.worker_round_trip = registry.add(
            Histogram(
                "remotemedia_worker_round_trip_seconds",
                "Seconds from sending an input to a worker process to its end of input.",
                NODE_BUCKETS,
                ("node_type",),
            )
        )
        self.worker_hop = registry.add(
            Histogram(
                "remotemedia_worker_hop_seconds",
                "What running in a worker process added to an input: the round trip minus "
                "the node's own work in the worker.",
                NODE_BUCKETS,
                ("node_type",),
            )
        )
        self.worker_restarts = registry.add(
            Counter(
                "remotemedia_worker_restarts_total",
                "Workers replaced: reason failed (it crashed, hung or broke the protocol) or "
                "memory (it outgrew --worker-max-rss-mb).",
                ("node_type", "reason"),
            )
        )
        self.turn_stage = registry.add(
            Histogram(
                "remotemedia_turn_stage_seconds",
                "Seconds of each stage of a turn: vad (end of speech to the VAD's report), "
                "transcribe (to the final transcript), reply_text, reply_audio (each from the "
                "one before); interrupt (the user's speech start to interrupted).",
                TURN_BUCKETS,
                ("pipeline", "stage", "node_type", "speculation"),
            )
        )
        self.turn_latency = registry.add(
            Histogram(
                "remotemedia_turn_latency_seconds",
                "Seconds from the end of the user's speech until the transcript, the first "
                "reply text, the first reply audio.",
                TURN_BUCKETS,
                ("pipeline", "until"),
            )
        )
        self.turns = registry.add(
            Counter(
                "remotemedia_turns_total",
                "Turns that ended, by outcome (transcribed, replied, interrupted, failed, "
                "unanswered).",
                ("pipeline", "outcome"),
            )
        )
        self.turn_wasted = registry.add(
            Counter(
                "remotemedia_turn_wasted_total",
                "Work thrown away: speculative transcripts cancelled (speech went on), "
                "replies cut by the user.",
                ("pipeline", "kind"),
            )
        )
        self.audio_samples = registry.add(
            Counter(
                "remotemedia_audio_samples_processed_total",
                "Audio samples received from clients.",
            )
        )

    def count_event(self, node_type: str, event: str, amount: int) -> None:
        """Record something a node counted (a worker's replacement has its own metric)."""
        reason = _WORKER_REPLACED.get(event)
        if reason is not None:
            self.worker_restarts.inc(amount, node_type=node_type, reason=reason)
        else:
            self.node_events.inc(amount, node_type=node_type, event=event)

    def worker_call(self, call: WorkerCall) -> None:
        """Record one input's trip through a worker process."""
        self.worker_round_trip.observe(call.round_trip, node_type=call.node_type)
        hop = call.hop
        if hop is not None:
            self.worker_hop.observe(hop, node_type=call.node_type)

    def node_timer(self, node_type: str) -> Callable[[float, float], None]:
        """What a session gives each input of a ``node_type`` node: its wait, its time."""
        waited = self.node_wait.observer(node_type=node_type)
        took = self.node_time.observer(node_type=node_type)

        def observe(wait: float, seconds: float) -> None:
            waited(wait)
            took(seconds)

        return observe

    def render(self) -> str:
        """The Prometheus text exposition."""
        return self.registry.render()
