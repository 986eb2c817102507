"""LogThrottle: a line a client can trigger, written at most once per interval, with a count."""

from __future__ import annotations

import logging

import pytest

from remotemedia.log_throttle import LogThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock: Clock) -> LogThrottle:
    return LogThrottle(logging.getLogger("tests.throttle"), interval=10.0, clock=clock)


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tests.throttle"]


def test_log_throttle_writes_once_per_interval_then_counts_the_dropped(
    throttle: LogThrottle, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert throttle.info("Refused host %r.", "a")
    for name in "bcd":
        clock.now += 1
        assert not throttle.info("Refused host %r.", name)
    assert throttle.dropped("Refused host %r.") == 3
    clock.now += 7  # 10 s after the first
    assert throttle.info("Refused host %r.", "e")
    assert _lines(caplog) == [
        "Refused host 'a'.",
        "Refused host 'e'. (3 more like it in the last 10 s not logged)",
    ]
    assert throttle.dropped("Refused host %r.") == 0


def test_log_throttle_keeps_templates_apart_never_arguments(
    throttle: LogThrottle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert throttle.info("Refused host %r.", "a")
    assert not throttle.info("Refused host %r.", "b")  # another argument: the same line
    assert throttle.warning("Refused origin %r.", "c")  # another template: its own line
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.WARNING]


def test_log_throttle_exception_carries_the_traceback(
    throttle: LogThrottle, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        int("boom")
    except ValueError:
        throttle.exception("Closing a connection after an unexpected error.")
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError


def test_log_throttle_counts_nothing_at_a_level_that_is_off(
    throttle: LogThrottle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assert not throttle.info("Refused host %r.", "a")
    assert throttle.dropped("Refused host %r.") == 0
    assert not caplog.records
