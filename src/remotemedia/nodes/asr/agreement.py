"""LocalAgreement-2: which words of a growing utterance's transcript are stable (sans-IO).

Re-transcribing an utterance as it grows gives a new hypothesis each time, and the
last words of each are often revised once more audio arrives. LocalAgreement-2
(Macháček et al., *Turning Whisper into Real-Time Transcription System*, 2023) takes
a word as stable once two consecutive hypotheses agree on it and on every word
before it (LocalAgreement-n: n of them); stable words are never taken back. They can
still be wrong: the final transcript, decoded on the whole utterance, is free to
differ (measured in BENCHMARKS.md, "Interim transcripts"), unless the recogniser is
told to keep them. Words are compared without case and
punctuation, so "Hello" and "hello," agree; the stable text keeps the words as the
hypothesis that confirmed them spelled them.
"""

from __future__ import annotations

import re
from collections import deque

__all__ = ["LocalAgreement", "common_prefix", "words_of"]

_NOT_WORD = re.compile(r"[^\w']+")


def _form(word: str) -> str:
    return _NOT_WORD.sub("", word).lower()


def words_of(text: str) -> list[str]:
    """The words of a transcript, as LocalAgreement compares them (lower case, no punctuation)."""
    return [form for form in map(_form, text.split()) if form]


def common_prefix(a: list[str], b: list[str]) -> int:
    """How many words two word lists share from their start."""
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


class LocalAgreement:
    """The stable and unstable parts of successive transcripts of one utterance.

    Args:
        n: How many successive transcripts must agree on a word (2: LocalAgreement-2).

    Attributes:
        stable: The words confirmed so far, as spelled in the transcripts (never shrinks).
        unstable: The rest of the newest transcript: words that may still change.
    """

    def __init__(self, n: int = 2) -> None:
        if n < 2:
            raise ValueError(f"LocalAgreement needs n >= 2 transcripts to agree, got {n}")
        self.stable: list[str] = []
        self.unstable = ""
        self._previous: deque[list[str]] = deque(maxlen=n - 1)  # compared forms

    def update(self, text: str) -> tuple[str, str]:
        """Take the newest transcript of the utterance; return (stable, unstable) text.

        ``unstable`` is the rest of this transcript after the stable words: the
        words that may still change. A transcript that revises a stable word does
        not change the stable words (LocalAgreement never takes one back).
        """
        spelled = [word for word in text.split() if _form(word)]
        current = [_form(word) for word in spelled]
        kept = len(self.stable)
        previous = self._previous
        if len(previous) == previous.maxlen and current[:kept] == words_of(" ".join(self.stable)):
            agreed = min(common_prefix(earlier, current) for earlier in previous)
            if agreed > kept:
                self.stable += spelled[kept:agreed]
                kept = agreed
        previous.append(current)
        self.unstable = " ".join(spelled[kept:])
        return " ".join(self.stable), self.unstable
