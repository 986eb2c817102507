"""Every fault scenario must keep every guarantee (see remotemedia.testing.faults).

The fixed set (grid, named cases, seeded draws) always runs; so do the draws of one
fresh seed, printed in pytest's header. A failure prints the scenario's plan, its
trace and the one-line command that replays it.
"""

from __future__ import annotations

import attrs
import pytest

from remotemedia.faults import Site
from remotemedia.testing.faults import Scenario, violations
from tests.faults import runner
from tests.faults import scenarios as catalogue
from tests.faults.conftest import FRESH_SEED


def _params(scenarios: list[Scenario], seed: int | None) -> list[object]:
    def marks(s: Scenario) -> list[pytest.MarkDecorator]:
        return [pytest.mark.slow] if s.process_types or s.transport == "grpc" else []

    return [pytest.param(s, seed, id=s.name, marks=marks(s)) for s in scenarios]


@pytest.mark.parametrize(
    ("scenario", "seed"),
    _params(catalogue.fixed(), None) + _params(catalogue.fresh(FRESH_SEED), FRESH_SEED),
)
def test_scenario_keeps_every_guarantee(scenario: Scenario, seed: int | None) -> None:
    outcome = runner.run(scenario)
    assert outcome.passed, runner.line(outcome, seed)


def test_the_suite_holds_at_least_300_scenarios_over_every_site() -> None:
    fixed = catalogue.fixed()
    assert len(fixed) >= 300
    assert len({s.name for s in fixed}) == len(fixed), "scenario ids must be unique"
    sites = {fault.site for s in fixed for fault in s.plan.faults}
    assert sites == set(Site), f"no scenario at {set(Site) - sites}"


def test_a_trace_missing_a_result_breaks_accounted() -> None:
    """The checks can fail: drop input #0's results from a fault-free trace."""
    clean = runner.run(catalogue.worker_named()[0]).trace  # worker-none: no faults
    broken = attrs.evolve(
        clean, events=[e for e in clean.events if not (e.kind == "result" and e.sequence == 0)]
    )
    assert violations(clean, clean) == []
    assert [v for v in violations(broken, clean) if v.startswith("accounted")] == [
        "accounted: input #0 got [] and no error, but the fault-free run got "
        "[('end', 'text:A0'), ('end', 'text:B0')]"
    ]
