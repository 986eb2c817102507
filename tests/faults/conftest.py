"""The fault suite's fresh seed: ``FAULT_SEED`` if set, else a new random one, printed."""

from __future__ import annotations

import os
import random

import pytest

FRESH_SEED = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(10_000, 100_000))


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"fault suite: fresh seed {FRESH_SEED} (replay: python3 scripts/tasks.py faults "
        f"--seed {FRESH_SEED}, or FAULT_SEED={FRESH_SEED} pytest tests/faults)"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Also at the end, where it shows even under -q (which drops the header).
    terminalreporter.write_line(
        f"fault suite: fresh seed {FRESH_SEED} (replay: python3 scripts/tasks.py faults "
        f"--seed {FRESH_SEED})"
    )
