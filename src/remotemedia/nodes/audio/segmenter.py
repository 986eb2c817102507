"""Turning per-frame speech probabilities into speech segments (sans-IO).

The rules follow Silero's own streaming iterator, plus a minimum speech duration:

1. A frame with probability >= ``threshold`` starts a *candidate* segment.
2. While in a candidate or in speech, a frame below ``neg_threshold`` starts (or
   continues) a silence run; a frame >= ``threshold`` cancels the run.
3. A candidate becomes speech once it has lasted ``min_speech_samples`` samples with no
   silence run open; a ``start`` event is emitted at the candidate's first sample
   minus ``pad_samples`` (never before 0).
4. A silence run of ``min_silence_samples`` samples ends the candidate (silently) or the
   speech (with an ``end`` event at the run's first sample plus ``pad_samples``, never past
   the current position).
5. At end of input, open speech ends at the current position (or where its silence
   run began); a candidate ends silently. (A candidate that lasted ``min_speech_samples``
   was already promoted by rule 3, so none is pending here.)
6. With ``pause_samples`` set (shorter than ``min_silence_samples``): a silence run in
   speech that lasts ``pause_samples`` emits a ``pause`` at the position its ``end``
   would have (the run's first sample plus ``pad_samples``). If speech resumes before
   the end, a ``resume`` follows at the frame that resumed it; otherwise the ``end``
   comes at that same position. A listener can start work at the pause that the end
   then confirms (speculation).

All positions are sample counts at the model rate.
"""

from __future__ import annotations

import enum

import attrs

__all__ = ["Segmenter", "SegmenterConfig", "SpeechEvent"]


@attrs.frozen
class SegmenterConfig:
    """Thresholds and durations, in samples at the model rate."""

    threshold: float
    neg_threshold: float
    min_speech_samples: int
    min_silence_samples: int
    pad_samples: int
    pause_samples: int | None = None


@attrs.frozen
class SpeechEvent:
    """A change of speech state (start, pause, resume, end) at sample ``position``."""

    kind: str
    position: int


class _State(enum.Enum):
    SILENCE = 0
    CANDIDATE = 1
    SPEECH = 2


class Segmenter:
    """Feeds on (frame probability) and yields speech start/end events."""

    def __init__(self, config: SegmenterConfig) -> None:
        self.config = config
        self._state = _State.SILENCE
        self._start = 0
        self._silence_from: int | None = None
        self._paused = False
        self.position = 0

    @property
    def in_speech(self) -> bool:
        """True between a start event and its end event."""
        return self._state is _State.SPEECH

    def push(self, probability: float, frame_samples: int) -> SpeechEvent | None:
        """Account for the next frame; return the event it causes, if any."""
        cfg = self.config
        frame_start = self.position
        self.position += frame_samples
        if probability >= cfg.threshold:
            self._silence_from = None
            if self._state is _State.SILENCE:
                self._state, self._start = _State.CANDIDATE, frame_start
            elif self._paused:
                self._paused = False
                return SpeechEvent("resume", frame_start)
        elif probability < cfg.neg_threshold and self._state is not _State.SILENCE:
            if self._silence_from is None:
                self._silence_from = frame_start
            silence = self.position - self._silence_from
            if silence >= cfg.min_silence_samples:
                return self._finish(self._silence_from)
            if (
                cfg.pause_samples is not None
                and silence >= cfg.pause_samples
                and self._state is _State.SPEECH
                and not self._paused
            ):
                self._paused = True
                return SpeechEvent("pause", self._end_at(self._silence_from))
        if (
            self._state is _State.CANDIDATE
            and self._silence_from is None
            and self.position - self._start >= cfg.min_speech_samples
        ):
            self._state = _State.SPEECH
            return SpeechEvent("start", max(0, self._start - cfg.pad_samples))
        return None

    def finish(self) -> list[SpeechEvent]:
        """End of input: close any open speech; return the events that causes."""
        speech_until = self.position if self._silence_from is None else self._silence_from
        end = self._finish(speech_until)
        return [end] if end is not None else []

    def _finish(self, silence_from: int) -> SpeechEvent | None:
        was_speech = self._state is _State.SPEECH
        self._state, self._silence_from, self._paused = _State.SILENCE, None, False
        if not was_speech:
            return None
        return SpeechEvent("end", self._end_at(silence_from))

    def _end_at(self, silence_from: int) -> int:
        return min(self.position, silence_from + self.config.pad_samples)
