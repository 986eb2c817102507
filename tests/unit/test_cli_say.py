"""`say` writes a whole status line at once (processes share one stderr pipe)."""

from __future__ import annotations

import sys

import pytest

from remotemedia.cli.say import say


class _Writes:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        self.writes.append("<flush>")


def test_say_writes_the_line_and_its_newline_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = _Writes()
    monkeypatch.setattr(sys, "stderr", stream)
    say("remotemedia serve: SIGTERM: draining")
    assert stream.writes == ["remotemedia serve: SIGTERM: draining\n", "<flush>"]
