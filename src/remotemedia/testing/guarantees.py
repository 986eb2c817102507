"""The guarantees a fault scenario must keep, checked on its trace (see :func:`violations`).

1. ``deadline``: the scenario ends within its deadline.
2. ``ending``: the stream ends with ``closed`` or a typed error (a gRPC status
   counts); a reset only when the plan disconnected or stalled the client.
3. ``accounted``: every input sequence sent is accounted for exactly once: its
   results, exactly those of the fault-free run, or a typed error naming the node
   and the sequence (a lost input, or the session's fatal error) beside at most the
   results it had before the failure; no more reports of one input at one node than
   faults fired.
4. ``leak``: no Trio task, child process, file descriptor or shared-memory file is
   left.
5. ``bystander``: a fault-free session run beside it, in the same process, gets
   exactly the fault-free results.
"""

from __future__ import annotations

import collections

from remotemedia.faults import ActionKind
from remotemedia.testing.trace import Trace, canonical_results

__all__ = ["violations"]

_CLIENT_GONE = frozenset({ActionKind.DISCONNECT, ActionKind.STALL})


def violations(trace: Trace, baseline: Trace) -> list[str]:
    """The guarantees ``trace`` breaks, each as ``<guarantee>: <what>``; [] if none.

    Args:
        trace: The scenario's run.
        baseline: The same scenario without faults (its results are the truth).
    """
    found: list[str] = []
    fired = {fault.action.kind for fault in trace.plan.faults if str(fault) in _fired(trace)}
    ending = trace.ending
    if ending == "timeout":
        found.append(
            f"deadline: the scenario did not end within its deadline ({trace.elapsed:.1f} s)"
        )
    client_gone = bool(fired & _CLIENT_GONE)
    if not ending.startswith(("closed", "error:", "status:")) and not (
        client_gone and ending in ("reset", "eof")
    ):
        found.append(f"ending: the stream ended with {ending}, not closed or a typed error")
    if not client_gone:
        found += _accounting(trace, baseline)
    found += [f"leak: {leak}" for leak in trace.leaks]
    if trace.bystander is not None:
        expected = canonical_results(e for e in baseline.events if e.kind == "result")
        got = canonical_results(trace.bystander)
        if got != expected:
            found.append(
                "bystander: the fault-free session beside it got "
                f"{[str(e) for e in got]}, not {[str(e) for e in expected]}"
            )
    return found


def _fired(trace: Trace) -> set[str]:
    return {event.detail for event in trace.events if event.kind == "fired"}


def _accounting(trace: Trace, baseline: Trace) -> list[str]:
    found = []
    if trace.ending == "closed:drained":
        return _drained_accounting(trace, baseline)
    truth = baseline.results()
    got = trace.results()
    # A gRPC status ends the call as a fatal in-band error ends the session.
    fatal = trace.ending.startswith("status:") or any(e.kind == "error" for e in trace.events)
    lost = collections.Counter(
        (event.node_id, event.sequence) for event in trace.events if event.kind == "lost"
    )
    # A node may take several items of one input (a splitter upstream), so one input
    # can be lost there more than once, but each loss needs a fault of its own.
    causes = max(1, len(_fired(trace)))
    for (node_id, sequence), count in lost.items():
        if count > causes:
            found.append(
                f"accounted: node {node_id} reported input #{sequence} lost {count} times "
                f"with {causes} fault(s) fired"
            )
    lost_sequences = {sequence for _, sequence in lost}
    for sequence in range(trace.sent):
        expected = truth.get(sequence, [])
        results = got.get(sequence, [])
        reported = fatal or sequence in lost_sequences
        if reported:
            if collections.Counter(results) - collections.Counter(expected):
                found.append(
                    f"accounted: input #{sequence} failed but got results the fault-free run "
                    f"did not: {results} (expected at most {expected})"
                )
        elif results != expected:
            found.append(
                f"accounted: input #{sequence} got {results} and no error, "
                f"but the fault-free run got {expected}"
            )
    extra = sorted(s for s in got if s >= trace.sent or s < 0)
    if extra:
        found.append(f"accounted: results for inputs never sent: {extra}")
    return found


def _drained_accounting(trace: Trace, baseline: Trace) -> list[str]:
    """A drained session: it finished the inputs it took and took no more.

    Which inputs a drain still took is a race with the client, and the flush
    outputs of the last one taken carry its sequence, so the check here is weaker:
    every result is one the fault-free run produced, none twice.
    """
    truth = collections.Counter(e.detail for e in baseline.events if e.kind == "result")
    got = collections.Counter(e.detail for e in trace.events if e.kind == "result")
    extra = got - truth
    if extra:
        return [f"accounted: a drained session produced results never expected: {sorted(extra)}"]
    return []
