"""The connection rules both gRPC transports keep: each verdict, its GOAWAY and its line."""

from __future__ import annotations

import logging

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes

from remotemedia.config import Limits
from remotemedia.log_throttle import LogThrottle
from remotemedia.transport.connection_rules import (
    MAX_PING_STRIKES,
    MIN_PING_INTERVAL,
    ConnectionRules,
    over_connection_limit,
    queue_goaway,
)
from remotemedia.transport.http2 import RESET_BURST, RESETS_PER_S, h2_config

LOGGER = "tests.connection_rules"


@pytest.fixture
def rules() -> ConnectionRules:
    limits = Limits(max_connections=3, handshake_timeout=4.0)
    # A clock that never moves: every line is written (none throttled).
    log = LogThrottle(logging.getLogger(LOGGER), interval=0.0, clock=lambda: 0.0)
    return ConnectionRules(limits, log, now=0.0)


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_connection_limit_refuses_the_one_accepted_at_the_limit() -> None:
    limits = Limits(max_connections=3)
    assert not over_connection_limit(2, limits)
    assert over_connection_limit(3, limits)


def test_refusal_logs_the_limit_and_the_flag(
    rules: ConnectionRules, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    cutoff = rules.refused()
    assert cutoff.error_code == ErrorCodes.REFUSED_STREAM
    assert _lines(caplog) == [
        (logging.WARNING, "Refused a connection: 3 are open, the limit (--max-connections).")
    ]


def test_no_request_logs_the_timeout_and_the_flag(
    rules: ConnectionRules, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    assert rules.no_request().error_code == ErrorCodes.NO_ERROR
    assert _lines(caplog) == [
        (
            logging.INFO,
            "Closing a connection that sent no request within 4 s (--handshake-timeout).",
        )
    ]


def test_protocol_error_logs_h2s_reason(
    rules: ConnectionRules, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    cutoff = rules.protocol_broken(ValueError("bad frame"))
    assert cutoff.error_code == ErrorCodes.PROTOCOL_ERROR
    assert _lines(caplog) == [
        (logging.INFO, "Closing a connection that broke the HTTP/2 protocol: bad frame")
    ]


def test_failed_frames_log_the_traceback(
    rules: ConnectionRules, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    try:
        _ = 1 // 0
    except ZeroDivisionError:
        cutoff = rules.frames_failed()
    assert cutoff.error_code == ErrorCodes.INTERNAL_ERROR
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.getMessage() == "Closing a connection after an unexpected error in its frames."
    assert record.exc_info is not None


def test_resets_within_the_burst_pass_and_one_more_is_cut_off(
    rules: ConnectionRules, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    for _ in range(int(RESET_BURST)):
        assert rules.reset(now=0.0) is None
    cutoff = rules.reset(now=0.0)
    assert cutoff is not None
    assert (cutoff.error_code, cutoff.debug_data) == (
        ErrorCodes.ENHANCE_YOUR_CALM,
        b"too_many_resets",
    )
    assert _lines(caplog) == [
        (logging.WARNING, f"Closing a connection that reset streams over {RESETS_PER_S:g}/s.")
    ]
    assert rules.reset(now=1.0) is None  # the bucket refills at the sustained rate


def test_pings_too_close_without_data_are_strikes(rules: ConnectionRules) -> None:
    verdicts = [rules.ping(now=0.0, data_sent=False) for _ in range(MAX_PING_STRIKES + 1)]
    assert verdicts == [None] * (MAX_PING_STRIKES + 1)  # the first ping is no strike
    cutoff = rules.ping(now=0.0, data_sent=False)
    assert cutoff is not None
    assert (cutoff.error_code, cutoff.debug_data) == (
        ErrorCodes.ENHANCE_YOUR_CALM,
        b"too_many_pings",
    )


def test_pings_apart_or_after_data_are_no_strikes(rules: ConnectionRules) -> None:
    now = 0.0
    for _ in range(10):
        now += MIN_PING_INTERVAL
        assert rules.ping(now, data_sent=False) is None
    for _ in range(10):
        assert rules.ping(now, data_sent=True) is None


def test_goaway_is_queued_once_h2_has_not_closed_the_connection_itself() -> None:
    server = h2.connection.H2Connection(h2_config())
    server.initiate_connection()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    queue_goaway(server, ErrorCodes.ENHANCE_YOUR_CALM, b"why")
    queue_goaway(server, ErrorCodes.NO_ERROR)  # h2 has closed it: nothing more queued
    events = client.receive_data(server.data_to_send())
    (goaway,) = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert (goaway.error_code, goaway.additional_data) == (ErrorCodes.ENHANCE_YOUR_CALM, b"why")
