"""The server's log lines: text for a terminal, or one JSON object a line for a collector.

What the runtime logs about a session or a turn carries its structured fields in the
record (``extra={"fields": {...}}``); the text form shows the message, the JSON form
the message *and* every field, so a log pipeline (Loki, Elasticsearch, CloudWatch)
can filter on ``event``, ``session``, ``pipeline``, ``outcome`` or a stage's seconds
without parsing prose. The fields are those of the metrics (seconds, the same stage
names), so a log line and a histogram never disagree.

:func:`configure_logging` is called by ``remotemedia serve``, never on import.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import IO, Any

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "TextFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
"""What ``--log-format`` accepts."""
LOG_LEVELS = ("debug", "info", "warning", "error")
"""What ``--log-level`` accepts."""

_HANDLER_NAME = "remotemedia"


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``2026-12-08T02:51:20.123Z INFO remotemedia.turns: message`` (and any traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        """One line (more with a traceback)."""
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message``, then the fields.

    A field never replaces one of the four (a node could name a field ``message``):
    it is then kept as ``field_message``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line[f"field_{key}" if key in line else key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(log_format: str, level: str, stream: IO[str] | None = None) -> None:
    """Send the ``remotemedia`` loggers' records at ``level`` and above to ``stream``.

    Args:
        log_format: ``text`` or ``json`` (:data:`LOG_FORMATS`).
        level: ``debug``, ``info``, ``warning`` or ``error``.
        stream: Where lines go; default standard error (standard output stays the
            CLI's own: its ``listening on`` line, which scripts read).

    Calling it again replaces the handler it added before, so it can be called once
    per server process without doubling lines.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    if level not in LOG_LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    logger = logging.getLogger("remotemedia")
    for handler in list(logger.handlers):
        if handler.name == _HANDLER_NAME:
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.name = _HANDLER_NAME
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    # Records go to this handler only: Python's last-resort handler (warnings and
    # above, bare messages) would print them a second time, in another form.
    logger.propagate = False
