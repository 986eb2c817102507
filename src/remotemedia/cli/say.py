"""One status line to stderr, written with a single ``write``.

``print(line, file=sys.stderr)`` writes the text and the newline separately when
stderr is unbuffered (``PYTHONUNBUFFERED``, ``python -u``). The processes of
``serve --processes`` share one stderr pipe, so two of them saying something at
the same moment interleaved: one line, then the other, then both newlines. One
``write`` of fewer than ``PIPE_BUF`` bytes to a pipe is atomic, so lines never mix.

With ``--log-format json`` every line on stderr must be JSON (a log collector reads
them), so the status lines become log records of ``remotemedia.cli`` instead
(:func:`say_as_logs`); the logging handler writes each with one ``write`` too.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["say", "say_as_logs"]

_logger: logging.Logger | None = None


def say(line: str) -> None:
    """Write ``line`` and its newline to stderr at once, and flush (or log it, see above)."""
    if _logger is not None:
        _logger.warning(line)
        return
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def say_as_logs() -> None:
    """From now on, status lines are log records (warnings: always shown) of ``remotemedia.cli``."""
    global _logger
    _logger = logging.getLogger("remotemedia.cli")
