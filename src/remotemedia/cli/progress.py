"""A small progress bar for the terminal (written only when stderr is a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """Redraws one status line at most every 0.1 s; silent when not on a terminal."""

    def __init__(self, total: int, *, label: str = "", stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.label = label
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty()
        self._last = 0.0
        self._started = time.monotonic()

    def update(self, done: int, *, extra: str = "", force: bool = False) -> None:
        """Show ``done`` out of the total."""
        if not self._enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        fraction = min(done / self.total, 1.0)
        width = 30
        filled = int(fraction * width)
        bar = "#" * filled + "-" * (width - filled)
        elapsed = now - self._started
        line = f"{self.label} [{bar}] {fraction:4.0%} {done}/{self.total} {elapsed:5.1f}s {extra}"
        self._stream.write(f"\r{line}\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        """Finish the line."""
        if self._enabled:
            self._stream.write("\n")
            self._stream.flush()
