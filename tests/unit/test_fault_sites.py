"""Node fault sites of in-process nodes, driven by an installed plan (autojump clock)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from remotemedia import NodeError, Text
from remotemedia.faults import Action, ActionKind, Fault, FaultPlan, FaultPlanError, Site
from remotemedia.session import Result
from remotemedia.testing.seams import FaultSwitch
from tests.sessions import run_texts

CHAIN = {
    "version": "v1",
    "nodes": [{"id": "a", "node_type": "PassThrough"}, {"id": "b", "node_type": "PassThrough"}],
    "connections": [{"from": "a", "to": "b"}],
}


SWITCH = FaultSwitch()
"""The plans of these tests reach their sessions through its seams."""


async def _run(inputs: int = 3) -> list[Result]:
    return await run_texts(CHAIN, inputs, SWITCH.seams)


def _plan(*faults_: Fault) -> FaultPlan:
    return FaultPlan(tuple(faults_))


async def test_fault_raise_in_process_ends_the_session_naming_node_and_input(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plan = _plan(Fault(Site.NODE_PROCESS, 2, Action(ActionKind.RAISE), node_id="b"))
    with SWITCH.install(plan) as counter, pytest.raises(NodeError) as caught:
        await _run()
    assert caught.value.node_id == "b"
    assert caught.value.sequence == 1
    assert "Injected fault at node.process of node 'b'" in str(caught.value)
    assert counter.fired == list(plan.faults)


async def test_fault_delay_keeps_every_result_and_takes_its_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plan = _plan(Fault(Site.NODE_PROCESS, 1, Action(ActionKind.DELAY, delay_ms=200)))
    started = trio.current_time()
    with SWITCH.install(plan):
        results = await _run()
    assert [r.data for r in results] == [Text("0"), Text("1"), Text("2")]
    assert trio.current_time() - started == pytest.approx(0.2)


async def test_fault_hang_in_flush_is_cut_by_the_callers_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plan = _plan(Fault(Site.NODE_FLUSH, 1, Action(ActionKind.HANG), node_id="a"))
    with SWITCH.install(plan), trio.move_on_after(60) as deadline:
        await _run()
    assert deadline.cancelled_caught


async def test_fault_raise_in_initialize_is_a_node_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fault = Fault(Site.NODE_INITIALIZE, 1, Action(ActionKind.RAISE, exception="OSError"), "a")
    with SWITCH.install(_plan(fault)), pytest.raises(NodeError) as caught:
        await _run()
    assert caught.value.node_id == "a"
    assert "could not initialise: Injected fault at node.initialize of node 'a'" in str(
        caught.value
    )
    assert isinstance(caught.value.__cause__, OSError)


async def test_fault_raise_in_cleanup_is_logged_and_the_results_stand(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    plan = _plan(Fault(Site.NODE_CLEANUP, 1, Action(ActionKind.RAISE), node_id="b"))
    with SWITCH.install(plan), caplog.at_level(logging.ERROR):
        results = await _run()
    assert len(results) == 3
    assert "Cleanup of node 'b' (PassThrough) failed." in caplog.text


async def test_fault_that_needs_a_worker_is_refused_for_an_in_process_node(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plan = _plan(Fault(Site.NODE_PROCESS, 1, Action(ActionKind.SIGKILL)))
    with SWITCH.install(plan), pytest.raises(NodeError, match="executor: process"):
        await _run()


def test_fault_plans_install_one_at_a_time() -> None:
    switch = FaultSwitch()
    assert not switch.installed
    with switch.install(FaultPlan()) as _:
        assert switch.installed
        with pytest.raises(FaultPlanError, match="installed already"), switch.install(FaultPlan()):
            pass
    assert not switch.installed
