"""Executor registry resolution and the pure supervision logic (backoff, circuit breaker)."""

from __future__ import annotations

import pytest

from remotemedia.executors.registry import Executor, ExecutorRegistry, PatternRule
from remotemedia.executors.supervision import BreakerState, CircuitBreaker, RestartPolicy


@pytest.mark.parametrize(
    ("node_type", "executor"),
    [
        ("WhisperNode", Executor.PROCESS),
        ("WhisperXNode", Executor.PROCESS),
        ("PiperTTSNode", Executor.PROCESS),
        ("KokoroTTSNode", Executor.PROCESS),
        ("LFM2AudioNode", Executor.PROCESS),
        ("HFWhisperNode", Executor.PROCESS),
        ("SileroVADNode", Executor.INPROCESS),
        ("FastResampleNode", Executor.INPROCESS),
        ("PassThrough", Executor.INPROCESS),
        ("MyWhisperNodeHelper", Executor.INPROCESS),  # patterns match the whole name
        ("UnknownNode", Executor.INPROCESS),
    ],
)
def test_default_registry_puts_model_nodes_in_processes(node_type: str, executor: Executor) -> None:
    assert ExecutorRegistry.with_defaults().executor_for(node_type) is executor


def test_registry_resolution_order_is_override_explicit_pattern_default() -> None:
    registry = ExecutorRegistry.with_defaults()
    registry.explicit["WhisperNode"] = Executor.INPROCESS
    assert registry.executor_for("WhisperNode") is Executor.INPROCESS
    assert registry.executor_for("WhisperNode", Executor.PROCESS) is Executor.PROCESS
    assert registry.executor_for("PiperTTSNode") is Executor.PROCESS
    registry.default = Executor.PROCESS
    assert registry.executor_for("Anything") is Executor.PROCESS


def test_registry_rules_sort_by_priority_and_keep_registration_order_on_ties() -> None:
    registry = ExecutorRegistry()
    registry.add_rule(PatternRule("A.*", Executor.PROCESS, priority=1, description="first"))
    registry.add_rule(PatternRule("A.*", Executor.INPROCESS, priority=1, description="tie"))
    registry.add_rule(PatternRule("AB", Executor.INPROCESS, priority=5, description="high"))
    assert [r.description for r in registry.rules] == ["high", "first", "tie"]
    assert registry.executor_for("AB") is Executor.INPROCESS
    assert registry.executor_for("AC") is Executor.PROCESS


def test_restart_policy_backs_off_100_200_400_ms() -> None:
    assert list(RestartPolicy().attempts()) == [(1, 0.1), (2, 0.2), (3, 0.4)]


def test_breaker_opens_after_five_consecutive_failures() -> None:
    breaker = CircuitBreaker()
    for second in range(4):
        breaker.record_failure(float(second))
        assert breaker.allow(float(second))
    breaker.record_failure(4.0)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(10.0)
    assert breaker.retry_in(10.0) == pytest.approx(24.0)


def test_breaker_success_resets_the_count() -> None:
    breaker = CircuitBreaker(threshold=3)
    breaker.record_failure(0.0)
    breaker.record_failure(1.0)
    breaker.record_success()
    breaker.record_failure(2.0)
    breaker.record_failure(3.0)
    assert breaker.state is BreakerState.CLOSED


def test_breaker_half_opens_after_30_s_for_exactly_one_probe() -> None:
    breaker = CircuitBreaker(threshold=1, reset_after=30.0)
    breaker.record_failure(100.0)
    assert not breaker.allow(129.9)
    assert breaker.allow(130.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow(130.1)  # one probe only
    breaker.record_failure(131.0)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(160.9)
    assert breaker.allow(161.0)
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow(161.0)
    assert breaker.retry_in(161.0) == 0.0


def test_restart_pauses_climb_the_ladder_with_failures_in_a_row() -> None:
    policy = RestartPolicy()
    assert list(policy.attempts(2)) == [(1, 0.2), (2, 0.4), (3, 0.4)]
    assert list(policy.attempts(9)) == [(1, 0.4), (2, 0.4), (3, 0.4)]


def test_breaker_counts_on_through_starts_until_an_input_finishes() -> None:
    breaker = CircuitBreaker(threshold=3)
    for second in range(2):
        breaker.record_failure(float(second))
        breaker.record_started()  # a replacement became ready, then crashed again
    breaker.record_failure(2.0)
    assert breaker.state is BreakerState.OPEN


def test_breaker_probe_that_starts_closes_it_and_an_abandoned_probe_frees_the_slot() -> None:
    breaker = CircuitBreaker(threshold=1, reset_after=30.0)
    breaker.record_failure(0.0)
    assert breaker.allow(30.0)
    breaker.abandon_probe()  # the probing session was cancelled
    assert breaker.allow(30.0)  # so the next one may probe
    breaker.record_started()
    assert breaker.state is BreakerState.CLOSED
    assert not breaker.idle  # the failure still counts until an input finishes
    breaker.record_success()
    assert breaker.idle
