"""Log lines a client triggers, at a rate the client cannot push up.

What a hostile client can cause as often as it likes (a refused handshake, a refused
host, a protocol error) must not become one log line per request: the log would grow
at the client's rate and drown everything else. Sans-IO: it reads a clock, never
sleeps, imports no Trio.

Rules:

1. :class:`LogThrottle` writes a line, then drops lines *with the same message
   template* for ``interval`` seconds; the next one it writes ends with how many it
   dropped.
2. Lines are told apart by their template (the format string, written in our code),
   never by their arguments (which a client chooses), so one throttle serves every
   line of a module and its memory is bounded by the templates there are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["LogThrottle"]


class LogThrottle:
    """A logger's lines, each template written at most once per ``interval`` seconds.

    Args:
        logger: Where the lines go.
        interval: Seconds after a line is written during which lines with the same
            template are only counted.
        clock: Seconds on a monotonic clock (a fake one in tests).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._quiet_until: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def dropped(self, message: str) -> int:
        """Lines with this template dropped since the last one written."""
        return self._dropped.get(message, 0)

    def log(self, level: int, message: str, *args: object, exc_info: bool = False) -> bool:
        """Write ``message % args`` at ``level``, unless its template was written too recently.

        The first line written after some were dropped ends with their count.
        Returns whether the line was written. ``message`` is the template (never an
        f-string with a client's text in it: rule 2).
        """
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        quiet_until = self._quiet_until.get(message)
        if quiet_until is not None and now < quiet_until:
            self._dropped[message] = self._dropped.get(message, 0) + 1
            return False
        self._quiet_until[message] = now + self.interval
        dropped = self._dropped.pop(message, 0)
        if dropped:
            text = f"{message} (%d more like it in the last %g s not logged)"
            self.logger.log(level, text, *args, dropped, self.interval, exc_info=exc_info)
        else:
            self.logger.log(level, message, *args, exc_info=exc_info)
        return True

    def info(self, message: str, *args: object) -> bool:
        """:meth:`log` at INFO."""
        return self.log(logging.INFO, message, *args)

    def warning(self, message: str, *args: object) -> bool:
        """:meth:`log` at WARNING."""
        return self.log(logging.WARNING, message, *args)

    def error(self, message: str, *args: object) -> bool:
        """:meth:`log` at ERROR."""
        return self.log(logging.ERROR, message, *args)

    def exception(self, message: str, *args: object) -> bool:
        """:meth:`log` at ERROR with the exception being handled (its traceback)."""
        return self.log(logging.ERROR, message, *args, exc_info=True)
