"""``TextCollectorNode``: turns a stream of text fragments into whole sentences.

What it emits goes to a voice, typically, and a voice's cost grows with the length
of what it is given at once (Piper took 2.7 GB for 2,000 characters without
punctuation), so no piece is longer than ``max_sentence_length``: a longer sentence,
or text without any boundary, is cut after the last word that fits (a single longer
word is cut where the limit falls).
"""

from __future__ import annotations

import re

import attrs

from remotemedia.media import RuntimeData, Text
from remotemedia.nodes.base import Node
from remotemedia.params import param

__all__ = ["END_MARKERS", "TextCollectorNode", "TextCollectorParams", "word_cut"]

END_MARKERS = frozenset({"<|text_end|>", "<|audio_end|>"})
"""Markers that end a turn: the partial sentence is flushed and the marker passed on."""

_DEFAULT_BOUNDARY = r"[.!?;\n]"
# A single character class, optionally repeated: matching it is linear in the text,
# whereas an arbitrary client-chosen regex can backtrack exponentially.
_SAFE_PATTERN = re.compile(r"\[\^?(?:\\.|[^\]\\])+\]\+?")


def _check_pattern(
    instance: object, attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"split_pattern is not a valid regular expression: {exc}") from None
        if not _SAFE_PATTERN.fullmatch(value):
            raise ValueError(
                f"split_pattern must be one character class such as '[.!?;\\n]' (optionally "
                f"followed by '+'), got {value!r}; other regexes can take exponential time"
            )


@attrs.frozen
class TextCollectorParams:
    """Parameters of :class:`TextCollectorNode`."""

    split_pattern: str | None = param(
        None, doc="Regex matching a sentence boundary (default: . ! ? ; or newline)."
    )
    min_sentence_length: int = param(
        3, doc="Shorter sentences are joined to the next one.", ge=1, le=10_000
    )
    yield_partial_on_end: bool = param(
        True, doc="Emit an unfinished sentence at end of input or at a turn marker."
    )
    max_sentence_length: int = param(
        300,
        doc="No piece is longer: a longer sentence, or text without a boundary, is cut "
        "after the last whole word that fits (a longer word is cut hard).",
        ge=1,
        le=1_000_000,
    )

    def __attrs_post_init__(self) -> None:
        _check_pattern(self, attrs.fields(type(self)).split_pattern, self.split_pattern)


class TextCollectorNode(Node[TextCollectorParams]):
    """Collect streamed text into complete sentences; flush the rest at end of input."""

    node_type = "TextCollectorNode"
    Params = TextCollectorParams
    accepts = frozenset({"text"})
    produces = frozenset({"text"})

    def __init__(self, node_id: str, params: TextCollectorParams) -> None:
        super().__init__(node_id, params)
        self._boundary = re.compile(params.split_pattern or _DEFAULT_BOUNDARY)
        self._buffer = ""
        self._scanned = 0  # the buffer before this offset holds no unused boundary

    def process(self, data: RuntimeData) -> list[RuntimeData]:
        """Append the text and return every sentence it completes."""
        if not isinstance(data, Text) or data.channel not in ("", "tts"):
            # Other kinds, and text on display-only channels, bypass splitting.
            return [data]
        if data.text.strip() in END_MARKERS:
            return [*self._take_partial(), data]
        self._buffer += data.text
        return self._take_sentences()

    def flush(self) -> list[RuntimeData]:
        """Return the unfinished sentence, if configured to."""
        return self._take_partial()

    def _take_sentences(self) -> list[RuntimeData]:
        sentences: list[RuntimeData] = []
        start = 0
        # Boundaries before `_scanned` were seen already (and left a sentence too
        # short to emit); scanning from just before it keeps long streams linear.
        for match in self._boundary.finditer(self._buffer, max(0, self._scanned - 1)):
            candidate = self._buffer[start : match.end()].strip()
            if len(candidate) >= self.params.min_sentence_length:
                sentences += self._pieces(candidate, whole=True)[0]
                start = match.end()
        pieces, self._buffer = self._pieces(self._buffer[start:], whole=False)
        sentences += pieces
        self._scanned = len(self._buffer)
        return sentences

    def _pieces(self, text: str, *, whole: bool) -> tuple[list[RuntimeData], str]:
        """``text`` cut into pieces of at most ``max_sentence_length``, and what is left.

        ``whole``: the text is a complete sentence, so its last piece goes too;
        otherwise the text shorter than the limit stays (its last word may go on).
        Linear in the text: each piece is found within its own window.
        """
        limit = self.params.max_sentence_length
        pieces: list[RuntimeData] = []
        start = 0
        while len(text) - start > limit or (not whole and len(text) - start == limit):
            if text[start].isspace():  # between pieces: counts for neither
                start += 1
                continue
            cut = start + word_cut(text[start : start + limit + 1], limit)
            if piece := text[start:cut].strip():
                pieces.append(Text(piece))
            start = cut
        rest = text[start:]
        if whole:
            if rest.strip():
                pieces.append(Text(rest.strip()))
            rest = ""
        return pieces, rest

    def _take_partial(self) -> list[RuntimeData]:
        rest, self._buffer, self._scanned = self._buffer.strip(), "", 0
        if rest and self.params.yield_partial_on_end:
            return [Text(rest)]
        return []


def word_cut(text: str, limit: int) -> int:
    """Where to cut ``text`` so that the part before holds at most ``limit`` characters.

    After the last whole word that fits: at the last whitespace within the first
    ``limit + 1`` characters (the one right after the limit still ends a word). Text
    with no whitespace there (one long word, or a script written without spaces) is
    cut at ``limit``. Always at least 1, so that cutting makes progress.
    """
    for index in range(min(limit, len(text) - 1), 0, -1):
        if text[index].isspace():
            return index
    return max(1, limit)
