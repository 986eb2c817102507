"""Node fault sites inside worker processes, decided by the runtime's installed plan."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from remotemedia import NodeError, Text
from remotemedia.faults import Action, ActionKind, Fault, FaultPlan, Site
from remotemedia.testing.seams import FaultSwitch
from tests.sessions import run_texts

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_workers")]

WORKER = {
    "version": "v1",
    "nodes": [{"id": "w", "node_type": "PassThrough", "executor": "process"}],
}


SWITCH = FaultSwitch()
"""The plans of these tests reach their sessions through its seams."""


async def _run(inputs: int) -> list[Any]:
    return await run_texts(WORKER, inputs, SWITCH.seams)


@pytest.mark.parametrize(
    "action", [Action(ActionKind.SIGKILL), Action(ActionKind.EXIT, exit_code=0)], ids=str
)
async def test_worker_dying_at_an_input_loses_that_input_once(action: Action) -> None:
    """The runtime counts occurrences, so the replacement worker is not hit again."""
    plan = FaultPlan((Fault(Site.NODE_PROCESS, 2, action, node_id="w"),))
    with trio.fail_after(60), SWITCH.install(plan) as counter:
        results = await _run(4)
    lost = [r.sequence for r in results if r.error is not None]
    passed = [r.data for r in results if r.error is None]
    assert lost == [1]
    assert passed == [Text("0"), Text("2"), Text("3")]
    assert counter.fired == list(plan.faults)


async def test_worker_raising_in_initialize_fails_the_node() -> None:
    plan = FaultPlan((Fault(Site.NODE_INITIALIZE, 1, Action(ActionKind.RAISE), node_id="w"),))
    with trio.fail_after(60), SWITCH.install(plan), pytest.raises(NodeError) as caught:
        await _run(1)
    assert caught.value.node_id == "w"
    assert "Injected fault at node.initialize of node 'w'" in str(caught.value)


async def test_worker_killed_while_flushing_reports_the_flush_lost() -> None:
    plan = FaultPlan((Fault(Site.NODE_FLUSH, 1, Action(ActionKind.SIGKILL), node_id="w"),))
    with trio.fail_after(60), SWITCH.install(plan):
        results = await _run(2)
    assert [r.data for r in results if r.error is None] == [Text("0"), Text("1")]
    (failure,) = [r for r in results if r.error is not None]
    assert "flush failed" in str(failure.error)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault(Site.SHM_RECEIVE, 1, Action(ActionKind.CORRUPT)), "sent a corrupt frame"),
        # The first output's doorbell (the worker's Ready was link.receive#1).
        (Fault(Site.DOORBELL_RECEIVE, 1, Action(ActionKind.CORRUPT)), "broke the control protocol"),
        (Fault(Site.DOORBELL_RECEIVE, 1, Action(ActionKind.CLOSE_LINK)), "died while processing"),
    ],
    ids=str,
)
async def test_runtime_side_fault_loses_one_input_and_replaces_the_worker(
    fault: Fault, reason: str
) -> None:
    """The supervisor's corrupt-frame, protocol and EOF branches, reached by a plan."""
    with trio.fail_after(60), SWITCH.install(FaultPlan((fault,))) as counter:
        results = await _run(4)
    lost = [r for r in results if r.error is not None]
    assert [r.sequence for r in lost] == [0]
    assert reason in str(lost[0].error)
    assert [r.data for r in results if r.error is None] == [Text("1"), Text("2"), Text("3")]
    assert counter.fired == [fault]


async def test_corrupt_end_of_input_frame_keeps_the_delivered_output() -> None:
    """Frame #2 is input 0's EndOfInput: its one output was delivered already.

    Found by the suite (scenario ``shm.receive[w]#2: corrupt``): the failure used to
    say the input was lost, beside its delivered result.
    """
    fault = Fault(Site.SHM_RECEIVE, 2, Action(ActionKind.CORRUPT), node_id="w")
    with trio.fail_after(60), SWITCH.install(FaultPlan((fault,))):
        results = await _run(3)
    assert [r.data for r in results if r.error is None] == [Text("0"), Text("1"), Text("2")]
    (failure,) = [r for r in results if r.error is not None]
    assert failure.sequence == 0
    assert "1 output of this input was delivered, any more it had are lost" in str(failure.error)
    assert "lost the text" not in str(failure.error)
