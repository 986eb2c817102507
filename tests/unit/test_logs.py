"""Log lines: text for a terminal, JSON with the structured fields for a collector."""

from __future__ import annotations

import io
import json
import logging

import pytest

from remotemedia.observability.logs import JsonFormatter, TextFormatter, configure_logging


def record(message: str, fields: dict[str, object] | None = None) -> logging.LogRecord:
    made = logging.LogRecord("remotemedia.turns", logging.INFO, __file__, 1, message, (), None)
    made.created = 1_765_161_080.123  # 2025-12-08T02:31:20.123Z
    if fields is not None:
        made.fields = fields
    return made


def test_json_lines_carry_the_message_and_every_field() -> None:
    fields = {"event": "turn", "stages": {"vad": 0.2}}
    line = JsonFormatter().format(record("Turn 1 ended.", fields))
    assert json.loads(line) == {
        "time": "2025-12-08T02:31:20.123Z",
        "level": "info",
        "logger": "remotemedia.turns",
        "message": "Turn 1 ended.",
        "event": "turn",
        "stages": {"vad": 0.2},
    }
    assert "\n" not in line


def test_a_field_never_hides_the_lines_own_keys() -> None:
    line = json.loads(JsonFormatter().format(record("real", {"message": "a field", "level": 3})))
    assert (line["message"], line["field_message"], line["level"], line["field_level"]) == (
        "real",
        "a field",
        "info",
        3,
    )


def test_text_lines_show_time_level_logger_and_message() -> None:
    assert TextFormatter().format(record("Turn 1 ended.", {"event": "turn"})) == (
        "2025-12-08T02:31:20.123Z INFO remotemedia.turns: Turn 1 ended."
    )


def test_configure_logging_replaces_its_handler_and_filters_by_level() -> None:
    logger = logging.getLogger("remotemedia")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    first, second = io.StringIO(), io.StringIO()
    try:
        configure_logging("text", "info", first)
        configure_logging("json", "warning", second)  # again: the first handler goes
        logging.getLogger("remotemedia.turns").info("not shown at warning")
        logging.getLogger("remotemedia.cli").warning("draining")
        assert first.getvalue() == ""
        (line,) = second.getvalue().splitlines()
        assert json.loads(line)["message"] == "draining"
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


@pytest.mark.parametrize(("log_format", "level"), [("yaml", "info"), ("json", "loud")])
def test_configure_logging_names_what_it_accepts(log_format: str, level: str) -> None:
    with pytest.raises(ValueError, match="is not one of"):
        configure_logging(log_format, level)
