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
    the VAD to it). Times are stream time of the audio received, so the utterance
    starts exactly at the VAD's reported start minus pre_roll_ms and ends at its
    reported end, even though the VAD reports both late. Emits one Audio per
    utterance with ``start_ms``/``end_ms`` metadata.
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
        # Utterance bounds in stream ms, as reported (start already includes the
        # pre-roll). Kept in ms, not frames, because an event may arrive before
        # the audio it refers to.
        self._start_ms: float | None = None
        self._end_ms: float | None = None

    def process(self, data: RuntimeData) -> list[RuntimeData]:
        """Take audio or a VAD event; return the utterances completed by it."""
        if isinstance(data, Json):
            return self._on_event(data.value) if isinstance(data.value, Mapping) else []
        if not isinstance(data, Audio):
            return []
        outputs: list[RuntimeData] = []
        fmt = (data.sample_rate, data.channels)
        if fmt != self._format:
            if self._format is not None:
                outputs += self.flush()
                self._base_ms = self._ms(self._frames)
            self._format, self._frames, self._chunks = fmt, 0, deque()
        self._chunks.append((self._frames, data.samples))
        self._frames += data.num_frames
        outputs += self._emit_ready()
        return outputs

    def flush(self) -> list[RuntimeData]:
        """End of input: emit the utterance in progress, if any."""
        if self._start_ms is None or self._format is None:
            return []
        end = (
            self._frames
            if self._end_ms is None
            else min(self._frames, self._frame_at(self._end_ms))
        )
        return self._emit(end)

    def _on_event(self, event: Mapping[str, Any]) -> list[RuntimeData]:
        if event.get("is_speech_start") and self._start_ms is None:
            start_ms = float(event.get("speech_start_ms", event.get("timestamp_ms", 0.0)))
            self._start_ms, self._end_ms = start_ms - self.params.pre_roll_ms, None
        if event.get("is_speech_end") and self._start_ms is not None:
            self._end_ms = float(event.get("speech_end_ms", event.get("timestamp_ms", 0.0)))
        return self._emit_ready() if self._format is not None else []

    def _emit_ready(self) -> list[RuntimeData]:
        """Emit the utterance if its end (or the maximum length) is covered by audio."""
        if self._start_ms is None:
            self._forget_before(
                self._frames - self._frames_of(self.params.pre_roll_ms + _HISTORY_SLACK_MS)
            )
            return []
        if self._end_ms is not None:
            end = self._frame_at(self._end_ms)
            return self._emit(end) if self._frames >= end else []
        limit = self._start_frame() + self._frames_of(self.params.max_utterance_duration_ms)
        if self._frames >= limit:
            return self._emit(limit, keep_speaking=True)
        return []

    def _emit(self, end: int, *, keep_speaking: bool = False) -> list[RuntimeData]:
        assert self._format is not None
        rate, channels = self._format
        start = self._start_frame()
        end = max(start, end)
        pieces = []
        for first, samples in self._chunks:
            last = first + samples.size // channels
            if last <= start or first >= end:
                continue
            lo, hi = max(start, first) - first, min(end, last) - first
            pieces.append(samples[lo * channels : hi * channels])
        self._start_ms = self._ms(end) if keep_speaking else None
        self._end_ms = None
        self._forget_before(end - self._frames_of(self.params.pre_roll_ms + _HISTORY_SLACK_MS))
        utterance = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        frames = utterance.size // channels
        long_enough = frames * 1000 >= self.params.min_utterance_duration_ms * rate
        loud_enough = (
            bool(utterance.size)
            and float(np.abs(utterance).max()) >= self.params.min_peak_amplitude
        )
        if not (frames and long_enough and loud_enough):
            return []
        metadata = {"start_ms": round(self._ms(start), 3), "end_ms": round(self._ms(end), 3)}
        return [Audio(utterance, rate, channels, metadata=metadata)]

    def _start_frame(self) -> int:
        assert self._start_ms is not None
        oldest = self._chunks[0][0] if self._chunks else self._frames
        return max(self._frame_at(self._start_ms), oldest)

    def _forget_before(self, frame: int) -> None:
        if self._start_ms is not None:
            frame = min(frame, self._start_frame())
        chunks, channels = self._chunks, self._format[1] if self._format else 1
        while chunks and chunks[0][0] + chunks[0][1].size // channels <= frame:
            chunks.popleft()

    def _frames_of(self, ms: float) -> int:
        rate = self._format[0] if self._format else 16_000
        return round(ms * rate / 1000)

    def _frame_at(self, stream_ms: float) -> int:
        return self._frames_of(stream_ms - self._base_ms)

    def _ms(self, frame: int) -> float:
        rate = self._format[0] if self._format else 16_000
        return self._base_ms + frame * 1000 / rate
