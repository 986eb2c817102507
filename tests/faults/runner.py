"""Running fault scenarios, for pytest and for the replay command alike.

Each scenario runs in a Trio run of its own: under Trio's autojump clock when it has
no worker process and no socket (then it takes milliseconds and repeats exactly),
else on the real clock. Its trace is checked against a fault-free run of the same
pipeline and inputs (computed once per pipeline, in-process).

Run as a program, it prints one line per scenario (see ``--help``)::

    python -m tests.faults.runner [--seed S] [-k ID]
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys

import attrs
import trio
import trio.testing

from remotemedia.testing.faults import NO_FAULTS, Scenario, Trace, violations
from tests.faults import scenarios as catalogue

_baselines: dict[str, Trace] = {}


@attrs.frozen
class Outcome:
    """A scenario's trace and the guarantees it broke."""

    scenario: Scenario
    trace: Trace
    violations: list[str]

    @property
    def passed(self) -> bool:
        return not self.violations


async def _baseline(scenario: Scenario) -> Trace:
    key = json.dumps(scenario.manifest, sort_keys=True)
    if key not in _baselines:
        plain = attrs.evolve(
            scenario, plan=NO_FAULTS, transport="inprocess", process_types=frozenset()
        )
        baseline = await plain.run()
        problems = violations(baseline, baseline)
        assert not problems, f"the fault-free run of {scenario.name} broke: {problems}"
        _baselines[key] = baseline
    return _baselines[key]


def run(scenario: Scenario) -> Outcome:
    """Run one scenario (and its baseline, the first time) in a Trio run of its own."""

    async def main() -> Outcome:
        baseline = await _baseline(scenario)
        trace = await scenario.run()
        return Outcome(scenario, trace, violations(trace, baseline))

    virtual = scenario.transport == "inprocess" and not scenario.process_types
    clock = trio.testing.MockClock(autojump_threshold=0) if virtual else None
    return trio.run(main, clock=clock)


def replay_command(scenario: Scenario, seed: int | None) -> str:
    """The one-line command that runs exactly this scenario again."""
    fresh = f" --seed {seed}" if seed is not None else ""
    return f"python3 scripts/tasks.py faults{fresh} -k {shlex.quote(scenario.name)}"


def line(outcome: Outcome, seed: int | None, *, trace: bool = False) -> str:
    """``<id> seed=<seed> pass|FAIL <digest>``, and for a failure its plan and replay.

    With ``trace``, a passing scenario's trace is printed too.
    """
    scenario = outcome.scenario
    plan_seed = scenario.plan.seed if scenario.plan.seed is not None else "-"
    verdict = "pass" if outcome.passed else "FAIL"
    text = f"{scenario.name} seed={plan_seed} {verdict} {outcome.trace.digest()}"
    if trace and outcome.passed:
        text += "".join(f"\n  | {row}" for row in str(outcome.trace).splitlines())
    if not outcome.passed:
        text += f"\n  plan: {scenario.plan.to_json()}"
        text += "".join(f"\n  violated {problem}" for problem in outcome.violations)
        text += "".join(f"\n  | {row}" for row in str(outcome.trace).splitlines())
        text += f"\n  replay: {replay_command(scenario, seed)}"
    return text


def chosen(seed: int | None, pattern: str | None) -> list[Scenario]:
    """The scenarios of ``--seed`` (or the fixed set), narrowed to ``-k``'s id."""
    pool = catalogue.fresh(seed) if seed is not None else catalogue.fixed()
    exact = [s for s in pool if s.name == pattern]
    return exact or catalogue.select(pool, pattern)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tasks.py faults",
        description="Run the fault scenarios; one line each: id, seed, pass/FAIL, trace digest.",
    )
    parser.add_argument(
        "--seed", type=int, help="run the draws of this seed instead of the fixed set"
    )
    parser.add_argument(
        "-k", dest="pattern", help="only the scenario with this id (or ids holding it)"
    )
    parser.add_argument("--trace", action="store_true", help="print every scenario's trace")
    options = parser.parse_args(argv)
    # The runtime logs every injected failure; the lines below say all a reader needs.
    logging.getLogger("remotemedia").setLevel(logging.CRITICAL)
    selected = chosen(options.seed, options.pattern)
    if not selected:
        print(f"No scenario matches {options.pattern!r}.", file=sys.stderr)
        return 2
    failed = 0
    for scenario in selected:
        outcome = run(scenario)
        failed += not outcome.passed
        print(line(outcome, options.seed, trace=options.trace), flush=True)
    print(f"{len(selected) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
