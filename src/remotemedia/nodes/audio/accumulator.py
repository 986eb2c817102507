"""``AudioBufferAccumulatorNode``: assembles utterances from audio and VAD events."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from remotemedia.media import Audio, Json, RuntimeData
from remotemedia.nodes.base import Node
from remotemedia.params import param

__all__ = ["AccumulatorParams", "AudioBufferAccumulatorNode"]

_HISTORY_SLACK_MS = 2_000
"""Audio kept beyond the pre-roll: a VAD reports a start up to min_speech + pad late."""


@attrs.frozen
class AccumulatorParams:
    """Parameters of :class:`AudioBufferAccumulatorNode`."""

    min_utterance_duration_ms: int = param(
        250, doc="Shorter utterances are dropped.", ge=0, le=600_000
    )
    max_utterance_duration_ms: int = param(
        30_000, doc="Longer speech is split into utterances of this length.", ge=100, le=600_000
    )
    pre_roll_ms: int = param(200, doc="Audio kept before the VAD's speech start.", ge=0, le=5_000)
    min_peak_amplitude: float = param(
        0.02,
        doc="Utterances quieter than this peak are dropped (stops ASR hallucinating on noise).",
        ge=0.0,
        le=1.0,
    )

    def __attrs_post_init__(self) -> None:
        if self.min_utterance_duration_ms > self.max_utterance_duration_ms:
            raise ValueError(
                f"min_utterance_duration_ms ({self.min_utterance_duration_ms}) must not exceed "
                f"max_utterance_duration_ms ({self.max_utterance_duration_ms})"
            )


class AudioBufferAccumulatorNode(Node[AccumulatorParams]):
    """Collect audio between VAD speech start and end events into one utterance.

    Takes the audio and the SileroVADNode JSON events on the same input (connect
    the VAD to it). Times are stream time of the audio received, so each utterance
    starts exactly at the VAD's reported start minus pre_roll_ms and ends at its
    reported end, although the VAD reports both late and before the audio they refer
    to. Emits one Audio per utterance with ``start_ms``/``end_ms`` metadata; speech
    longer than max_utterance_duration_ms is split into several.
    """

    node_type = "AudioBufferAccumulatorNode"
    Params = AccumulatorParams
    accepts = frozenset({"audio", "json"})
    produces = frozenset({"audio"})

    def __init__(self, node_id: str, params: AccumulatorParams) -> None:
        super().__init__(node_id, params)
        # (first frame, samples) of recent audio, oldest first; bounded by time.
        self._chunks: deque[tuple[int, np.ndarray]] = deque()
        self._format: tuple[int, int] | None = None
        self._frames = 0  # frames received in the current format
        self._base_ms = 0.0  # stream time at which the current format began
        # Utterances as [start_ms, end_ms or None], oldest first, in stream ms as
        # reported (start already includes the pre-roll). Kept in ms, not frames,
        # because events arrive before the audio they refer to; only the last one
        # may still be open (end None).
        self._spans: deque[list[float | None]] = deque()

    def process(self, data: RuntimeData) -> list[RuntimeData]:
        """Take audio or a VAD event; return the utterances completed by it."""
        if isinstance(data, Json):
            if isinstance(data.value, Mapping):
                self._on_event(data.value)
            return self._emit_ready() if self._format is not None else []
        if not isinstance(data, Audio):
            return []
        outputs: list[RuntimeData] = []
        fmt = (data.sample_rate, data.channels)
        if fmt != self._format:
            if self._format is not None:
                outputs += self._close_format()
            self._format, self._frames, self._chunks = fmt, 0, deque()
        if data.samples.size:
            self._chunks.append((self._frames, data.samples))
            self._frames += data.num_frames
        outputs += self._emit_ready()
        return outputs

    def _close_format(self) -> list[RuntimeData]:
        """The audio format changes: emit what is held; speech in progress continues."""
        boundary_ms = self._ms(self._frames)
        speaking = bool(self._spans) and self._spans[-1][1] is None
        outputs = self.flush()
        self._base_ms = boundary_ms
        if speaking:
            self._spans.append([boundary_ms, None])
        return outputs

    def flush(self) -> list[RuntimeData]:
        """End of input: emit every utterance still held, the open one cut at the end."""
        outputs: list[RuntimeData] = []
        while self._spans and self._format is not None:
            start_ms, end_ms = self._spans.popleft()
            assert start_ms is not None
            end = self._frames if end_ms is None else min(self._frames, self._frame_at(end_ms))
            outputs += self._cut(self._frame_at(start_ms), end)
        self._spans.clear()
        return outputs

    def _on_event(self, event: Mapping[str, Any]) -> None:
        for kind, ms in _transitions(event):
            open_span = bool(self._spans) and self._spans[-1][1] is None
            if kind == "end" and open_span:
                self._spans[-1][1] = ms
            elif kind == "start" and not open_span:
                self._spans.append([ms - self.params.pre_roll_ms, None])

    def _emit_ready(self) -> list[RuntimeData]:
        """Emit every utterance whose end (or maximum length) is covered by audio."""
        outputs: list[RuntimeData] = []
        longest = self._frames_of(self.params.max_utterance_duration_ms)
        while self._spans:
            span = self._spans[0]
            start_ms, end_ms = span
            assert start_ms is not None
            start = max(self._frame_at(start_ms), self._oldest())
            end = self._frame_at(end_ms) if end_ms is not None else None
            if start + longest <= self._frames and (end is None or end > start + longest):
                outputs += self._cut(start, start + longest)
                span[0] = self._ms(start + longest)
                continue
            if end is None or end > self._frames:
                break
            self._spans.popleft()
            outputs += self._cut(start, end)
        keep_from = self._frames - self._frames_of(self.params.pre_roll_ms + _HISTORY_SLACK_MS)
        if self._spans and self._spans[0][0] is not None:
            keep_from = min(keep_from, self._frame_at(self._spans[0][0]))
        self._forget_before(keep_from)
        return outputs

    def _cut(self, start: int, end: int) -> list[RuntimeData]:
        """Return the audio of frames [start, end) as an utterance, unless it is dropped."""
        assert self._format is not None
        rate, channels = self._format
        start = max(start, self._oldest())
        pieces = []
        for first, samples in self._chunks:
            last = first + samples.size // channels
            if last <= start or first >= end:
                continue
            lo, hi = max(start, first) - first, min(end, last) - first
            pieces.append(samples[lo * channels : hi * channels])
        utterance = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        frames = utterance.size // channels
        long_enough = frames * 1000 >= self.params.min_utterance_duration_ms * rate
        loud_enough = bool(utterance.size) and (
            float(np.abs(utterance).max()) >= self.params.min_peak_amplitude
        )
        if not (frames and long_enough and loud_enough):
            return []
        metadata = {"start_ms": round(self._ms(start), 3), "end_ms": round(self._ms(end), 3)}
        return [Audio.adopt(utterance, rate, channels, metadata=metadata)]

    def _forget_before(self, frame: int) -> None:
        chunks, channels = self._chunks, self._format[1] if self._format else 1
        while chunks and chunks[0][0] + chunks[0][1].size // channels <= frame:
            chunks.popleft()

    def _oldest(self) -> int:
        return self._chunks[0][0] if self._chunks else self._frames

    def _frames_of(self, ms: float) -> int:
        rate = self._format[0] if self._format else 16_000
        return round(ms * rate / 1000)

    def _frame_at(self, stream_ms: float) -> int:
        return self._frames_of(stream_ms - self._base_ms)

    def _ms(self, frame: int) -> float:
        rate = self._format[0] if self._format else 16_000
        return self._base_ms + frame * 1000 / rate


def _transitions(event: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The speech starts and ends a VAD event reports, in order.

    SileroVADNode lists them in ``events``; an event of the original runtime has only
    the flags, with ``timestamp_ms`` as the time.
    """
    listed = event.get("events")
    if isinstance(listed, list):
        return [
            (str(item["kind"]), float(item["ms"]))
            for item in listed
            if isinstance(item, Mapping) and item.get("kind") in ("start", "end")
        ]
    found = []
    fallback = float(event.get("timestamp_ms", 0.0))
    for kind in ("start", "end"):
        if event.get(f"is_speech_{kind}"):
            found.append((kind, float(event.get(f"speech_{kind}_ms", fallback))))
    return sorted(found, key=lambda transition: transition[1])
