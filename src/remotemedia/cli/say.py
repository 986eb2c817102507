"""One status line to stderr, written with a single ``write``.

``print(line, file=sys.stderr)`` writes the text and the newline separately when
stderr is unbuffered (``PYTHONUNBUFFERED``, ``python -u``). The processes of
``serve --processes`` share one stderr pipe, so two of them saying something at
the same moment interleaved: one line, then the other, then both newlines. One
``write`` of fewer than ``PIPE_BUF`` bytes to a pipe is atomic, so lines never mix.
"""

from __future__ import annotations

import sys

__all__ = ["say"]


def say(line: str) -> None:
    """Write ``line`` and its newline to stderr at once, and flush."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
