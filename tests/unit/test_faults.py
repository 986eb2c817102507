"""Fault plans as data: validation, JSON, seeded drawing, and when faults fire."""

from __future__ import annotations

import pytest

from remotemedia.faults import (
    ACTIONS_AT,
    Action,
    ActionKind,
    Fault,
    FaultCounter,
    FaultPlan,
    FaultPlanError,
    Site,
)

KILL = Action(ActionKind.SIGKILL)
RAISE = Action(ActionKind.RAISE, exception="ValueError")


def test_fault_refuses_an_action_its_site_cannot_take() -> None:
    with pytest.raises(FaultPlanError, match=r"node\.cleanup cannot sigkill; it can: delay"):
        Fault(Site.NODE_CLEANUP, 1, KILL)


def test_fault_refuses_an_occurrence_below_one() -> None:
    with pytest.raises(FaultPlanError, match="occurrence must be 1 or more, got 0"):
        Fault(Site.NODE_PROCESS, 0, RAISE)


def test_action_refuses_a_negative_delay() -> None:
    with pytest.raises(FaultPlanError, match="delay_ms must be 0 or more, got -5"):
        Action(ActionKind.DELAY, delay_ms=-5)


def test_plan_prints_each_fault_and_its_seed() -> None:
    plan = FaultPlan(
        (
            Fault(Site.NODE_PROCESS, 3, RAISE, node_id="asr"),
            Fault(Site.SHM_RECEIVE, 1, Action(ActionKind.DELAY, delay_ms=50)),
        ),
        seed=7,
    )
    assert str(plan) == "seed 7: node.process[asr]#3: raise ValueError; shm.receive#1: delay 50 ms"
    assert str(FaultPlan()) == "no faults"


def test_plan_survives_json_and_back() -> None:
    plan = FaultPlan.random(11, faults=3)
    assert FaultPlan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "Not a fault plan"),
        (
            '{"faults": [{"site": "node.nowhere", "occurrence": 1, "action": {"kind": "raise"}}]}',
            "'node.nowhere' is not a Site",
        ),
        (
            '{"faults": [{"site": "node.cleanup", "occurrence": 1, '
            '"action": {"kind": "sigkill"}}]}',
            "cannot sigkill",
        ),
    ],
)
def test_plan_from_bad_json_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(FaultPlanError, match=message):
        FaultPlan.from_json(text)


def test_random_plans_are_reproducible_and_valid() -> None:
    plans = [FaultPlan.random(seed, faults=2, node_ids=("a", "b", "")) for seed in range(300)]
    again = [FaultPlan.random(seed, faults=2, node_ids=("a", "b", "")) for seed in range(300)]
    assert plans == again
    assert len({plan.to_json() for plan in plans}) > 250  # seeds give different plans
    for plan in plans:
        for fault in plan.faults:
            assert fault.action.kind in ACTIONS_AT[fault.site]
            assert 1 <= fault.occurrence <= 5
    sites = {fault.site for plan in plans for fault in plan.faults}
    assert sites == set(Site)


def test_random_plans_keep_to_the_sites_asked_for() -> None:
    plans = [FaultPlan.random(seed, sites=[Site.SHM_PUBLISH]) for seed in range(50)]
    assert {fault.site for plan in plans for fault in plan.faults} == {Site.SHM_PUBLISH}


def test_counter_fires_at_the_occurrence_and_only_once() -> None:
    counter = FaultCounter(FaultPlan((Fault(Site.NODE_PROCESS, 3, RAISE),)))
    actions = [counter.reached(Site.NODE_PROCESS, "x") for _ in range(6)]
    assert actions == [None, None, RAISE, None, None, None]
    assert counter.fired == [Fault(Site.NODE_PROCESS, 3, RAISE)]


def test_counter_counts_per_node_when_the_fault_names_one() -> None:
    fault = Fault(Site.NODE_PROCESS, 2, KILL, node_id="asr")
    counter = FaultCounter(FaultPlan((fault,)))
    hits = [("vad", None), ("asr", None), ("vad", None), ("asr", KILL), ("asr", None)]
    for node, expected in hits:
        assert counter.reached(Site.NODE_PROCESS, node) == expected


def test_counter_ignores_other_sites_and_first_fault_wins_a_tie() -> None:
    first = Fault(Site.SHM_RECEIVE, 1, Action(ActionKind.CORRUPT))
    second = Fault(Site.SHM_RECEIVE, 1, Action(ActionKind.DROP))
    later = Fault(Site.SHM_RECEIVE, 2, Action(ActionKind.DROP))
    counter = FaultCounter(FaultPlan((first, second, later)))
    assert counter.reached(Site.SHM_PUBLISH) is None
    assert counter.reached(Site.SHM_RECEIVE) == first.action
    assert counter.reached(Site.SHM_RECEIVE) == later.action
    assert counter.fired == [first, later]
