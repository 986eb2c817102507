"""The trace of a fault scenario: what its client saw, in a form that replays alike.

Rules:

1. Its events hold no timings, pids or error prose, so the same seed gives the same
   :meth:`Trace.digest`; those are kept apart (:attr:`Trace.messages`,
   :attr:`Trace.elapsed`).
2. Results keep their order per node and sequence; events of different sequences or
   nodes, which run concurrently, are put in a canonical order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

import attrs

from remotemedia.faults import FaultPlan

__all__ = ["CallEnded", "Trace", "TraceEvent"]


@attrs.frozen
class TraceEvent:
    """One thing a scenario's client (or the runtime) saw; no timings, no prose.

    Attributes:
        kind: ``result``, ``lost`` (a node lost an input, the session went on),
            ``error`` (the session's fatal typed error), ``end`` (how the stream
            ended), ``fired`` (a fault of the plan), or a lifecycle event
            (``worker.started``, ``worker.failed``, ``breaker.open``).
        node_id: The node it concerns, if any.
        sequence: The input sequence it concerns, or -1.
        detail: A result's value (text, or a digest of other data), an error's
            type, the stream's ending, the fault.
    """

    kind: str
    node_id: str = ""
    sequence: int = -1
    detail: str = ""

    def __str__(self) -> str:
        where = f" {self.node_id}" if self.node_id else ""
        sequence = f"#{self.sequence}" if self.sequence >= 0 else ""
        return f"{self.kind}{where}{sequence} {self.detail}".rstrip()


_ORDER = {"result": 0, "lost": 0, "error": 1, "end": 2, "fired": 3}


@attrs.define
class Trace:
    """What a scenario produced.

    Attributes:
        scenario: Its name.
        plan: The plan it ran under.
        transport: ``inprocess`` or ``grpc``.
        sent: How many inputs the client sent (sequences ``0 .. sent-1``).
        events: What happened (see :class:`TraceEvent`), in the order seen.
        bystander: The results of the fault-free session beside it (None: none ran).
        leaks: What it left behind (tasks, processes, fds, shared-memory files).
        messages: The error messages, for people (not part of the digest).
        elapsed: Seconds it took (not part of the digest).
    """

    scenario: str
    plan: FaultPlan
    transport: str
    sent: int = 0
    events: list[TraceEvent] = attrs.Factory(list)
    bystander: list[TraceEvent] | None = None
    leaks: list[str] = attrs.Factory(list)
    messages: list[str] = attrs.Factory(list)
    elapsed: float = 0.0

    @property
    def ending(self) -> str:
        """How the stream ended: ``closed``, ``error:<type>``, ``status:<code>``, ``reset``, ..."""
        ends = [event.detail for event in self.events if event.kind == "end"]
        return ends[-1] if ends else "none"

    def canonical(self) -> list[TraceEvent]:
        """The events in canonical order (rule 2): what the digest covers.

        A stream that ended otherwise than ``closed`` (a fatal error, a status, a
        drain, a disconnect, the deadline) keeps only its ending and the first
        fault that fired: what else happened before the teardown reached every
        part (results out, later faults, worker restarts) is a race. It is still
        checked, by :func:`violations`.
        """
        if self.ending != "closed":
            first = [e for e in self.events if e.kind == "fired"][:1]
            return [e for e in self.events if e.kind == "end"] + first
        outcomes = [e for e in self.events if e.kind in _ORDER]
        lifecycle = sorted(
            (e for e in self.events if e.kind not in _ORDER),
            key=lambda e: (e.kind, e.node_id, e.detail),
        )
        # A stable sort: results of one node for one sequence keep their order; faults
        # at concurrent sites may fire in either order.
        ordered = sorted(
            outcomes,
            key=lambda e: (
                _ORDER[e.kind],
                max(e.sequence, 0),
                e.node_id,
                "" if e.kind == "result" else e.detail,
            ),
        )
        return ordered + lifecycle

    def digest(self) -> str:
        """A short hash of the canonical events, the plan and the transport (rule 1)."""
        document = {
            "plan": json.loads(self.plan.to_json()),
            "transport": self.transport,
            "sent": self.sent if self.ending == "closed" else None,
            "events": [attrs.astuple(event) for event in self.canonical()],
            "bystander": None
            if self.bystander is None
            else [attrs.astuple(e) for e in canonical_results(self.bystander)],
            "leaks": self.leaks,
        }
        text = json.dumps(document, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def results(self) -> dict[int, list[tuple[str, str]]]:
        """Each sequence's results as ``(node_id, value)``, in order."""
        return results_by_sequence(self.events)

    def __str__(self) -> str:
        lines = [f"{self.scenario} [{self.transport}] {self.plan}: sent {self.sent}"]
        lines += [f"  {event}" for event in self.events]  # all of them, as seen
        lines += [f"  message: {message}" for message in self.messages]
        lines += [f"  leak: {leak}" for leak in self.leaks]
        return "\n".join(lines)


def results_by_sequence(events: Sequence[TraceEvent]) -> dict[int, list[tuple[str, str]]]:
    by_sequence: dict[int, list[tuple[str, str]]] = {}
    for event in canonical_results(events):
        by_sequence.setdefault(event.sequence, []).append((event.node_id, event.detail))
    return by_sequence


def canonical_results(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    results = [event for event in events if event.kind == "result"]
    return sorted(results, key=lambda event: (event.sequence, event.node_id))


class CallEnded(Exception):
    """A scenario's call ended without a response: a gRPC status, a reset, a refusal.

    Raised by the client's end of a call (any transport) and recorded as the trace's
    ``end`` event.

    Attributes:
        ending: The ``end`` event's detail (``status:UNAVAILABLE``, ``reset``).
    """

    def __init__(self, ending: str, message: str) -> None:
        super().__init__(message)
        self.ending = ending
