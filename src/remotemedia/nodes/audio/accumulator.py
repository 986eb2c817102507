"""``AudioBufferAccumulatorNode``: assembles utterances from audio and VAD events."""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
import numpy as np

from remotemedia.events import (
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TurnVerdict,
    VoiceActivity,
    event_of,
)
from remotemedia.media import INTERIM, Audio, Control, Json, RuntimeData
from remotemedia.nodes.base import Node
from remotemedia.params import param

__all__ = ["CANCEL", "AccumulatorParams", "AudioBufferAccumulatorNode"]

_HISTORY_SLACK_MS = 2_000
"""Audio kept beyond the pre-roll: a VAD reports a start up to min_speech + pad late."""
_SHORTEST_INTERIM_MS = 200


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
    speculative: bool = param(
        True,
        doc="At a VAD 'pause', emit the utterance so far as a speculation; the end commits it "
        "and a 'resume' cancels it (Control messages). Needs the VAD's speculative_silence_ms.",
    )
    interim_interval_ms: int = param(
        0,
        doc="While speech goes on, emit the utterance so far every this many ms of audio, "
        "marked 'interim', for interim transcripts (0: never). At least 200.",
        ge=0,
        le=10_000,
    )

    end_turn_above: float | None = param(
        None,
        doc="End an utterance at a pause that a SmartTurnNode judges a complete turn with at "
        "least this probability, before the VAD's end window (null: never; even 0.95 ended "
        "a fifth of the test set's mid-sentence cuts: BENCHMARKS.md, 'Turn detection').",
        ge=0.0,
        le=1.0,
    )
    hold_turn_below: float | None = param(
        None,
        doc="At the VAD's end, if a SmartTurnNode judged the pause before it incomplete "
        "(probability below this), wait up to hold_turn_ms for speech to go on (null: never; "
        "every threshold held some true ends of the test set: BENCHMARKS.md, 'Turn detection').",
        ge=0.0,
        le=1.0,
    )
    hold_turn_ms: int = param(1_000, doc="Longest wait of hold_turn_below.", ge=0, le=10_000)

    def __attrs_post_init__(self) -> None:
        if 0 < self.interim_interval_ms < _SHORTEST_INTERIM_MS:
            raise ValueError(
                f"interim_interval_ms ({self.interim_interval_ms}) must be 0 (off) or at "
                f"least {_SHORTEST_INTERIM_MS}: each interim is a whole recognition run"
            )
        if self.min_utterance_duration_ms > self.max_utterance_duration_ms:
            raise ValueError(
                f"min_utterance_duration_ms ({self.min_utterance_duration_ms}) must not exceed "
                f"max_utterance_duration_ms ({self.max_utterance_duration_ms})"
            )


CANCEL = "cancel_speculation"
"""Control kind: the speculation named by ``segment_id`` is void (speech went on)."""


@attrs.define
class _Span:
    """One utterance in stream ms as reported (start includes the pre-roll)."""

    start: float
    utterance: str
    end: float | None = None
    interim_at: float = 0.0  # stream ms of the audio the next interim waits for
    verdict: tuple[float, float] | None = None  # Smart Turn's (at ms, probability), latest
    held: float | None = None  # an end postponed because the turn seemed incomplete
    pause: float | None = None  # a VAD pause not yet acted on
    speculation: tuple[str, float] | None = None  # (id, end ms) of the one emitted


class AudioBufferAccumulatorNode(Node[AccumulatorParams]):
    """Collect audio between VAD speech start and end events into one utterance.

    Takes the audio and the SileroVADNode's reports
    (:class:`~remotemedia.events.VoiceActivity`, or Json of that shape from a client,
    such as the original runtime's flags) on the same input (connect the VAD to it),
    and any SmartTurnNode verdicts (:class:`~remotemedia.events.TurnVerdict`). Times
    are stream time of the audio received, so each utterance starts exactly at the
    VAD's reported start minus pre_roll_ms and ends at its reported end, although the
    VAD reports both late and before the audio they refer to. Emits one Audio per
    utterance with ``start_ms``/``end_ms`` metadata; speech longer than
    max_utterance_duration_ms is split into several.

    Speculation (with the VAD's ``speculative_silence_ms``): at a ``pause`` the
    utterance so far goes out at once, with a ``speculation`` id in its metadata, so
    the recogniser can start before the end is certain. The VAD's ``end`` at the same
    time then sends the same utterance with ``commits: id`` in its metadata (a
    recogniser that still holds the speculation's result uses it; one that lost it,
    say to a worker restart, transcribes this); a ``resume`` sends
    ``Control("cancel_speculation", id)`` and the utterance goes on. Each is counted
    (``speculation_started``, ``_committed``, ``_cancelled``).

    Interims (``interim_interval_ms``): while speech goes on, the utterance so far
    goes out every interval with :data:`~remotemedia.media.INTERIM` in its metadata,
    for a recogniser's interim transcripts; one that would only queue behind other
    input is skipped by the session. Every utterance's metadata names it
    (``utterance``), so its interims, speculation and final cut can be matched.
    """

    node_type = "AudioBufferAccumulatorNode"
    Params = AccumulatorParams
    accepts = frozenset({"audio", "json"})
    produces = frozenset({"audio", "control"})

    def __init__(self, node_id: str, params: AccumulatorParams) -> None:
        super().__init__(node_id, params)
        # (first frame, samples) of recent audio, oldest first; bounded by time.
        self._chunks: deque[tuple[int, np.ndarray]] = deque()
        self._format: tuple[int, int] | None = None
        self._frames = 0  # frames received in the current format
        self._base_ms = 0.0  # stream time at which the current format began
        # Utterances, oldest first. Kept in ms, not frames, because events arrive
        # before the audio they refer to; only the last one may still be open.
        self._spans: deque[_Span] = deque()
        self._speculations = 0
        self._utterances = 0
        self._ended_early = False  # the last utterance ended at a pause, by Smart Turn

    def process(self, data: RuntimeData) -> list[RuntimeData]:
        """Take audio, a VAD report or a Smart Turn verdict; return the utterances it completes."""
        if isinstance(data, Json):
            event = event_of(data)
            said: list[RuntimeData] = []
            if isinstance(event, VoiceActivity):
                said = self._on_activity(event)
            elif isinstance(event, TurnVerdict):
                said = self._on_verdict(event)
            return said + self._emit_ready() if self._format is not None else said
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
        speaking = bool(self._spans) and self._spans[-1].end is None
        outputs = self.flush()
        self._base_ms = boundary_ms
        if speaking:
            self._spans.append(self._open(boundary_ms))
        return outputs

    def flush(self) -> list[RuntimeData]:
        """End of input: emit every utterance still held, the open one cut at the end."""
        outputs: list[RuntimeData] = []
        while self._spans and self._format is not None:
            span = self._spans.popleft()
            end_ms = self._ms(self._frames) if span.end is None else span.end
            outputs += self._finish(
                span, self._frame_at(span.start), min(self._frames, self._frame_at(end_ms)), end_ms
            )
        self._spans.clear()
        return outputs

    def _on_activity(self, activity: VoiceActivity) -> list[RuntimeData]:
        """Follow the speech starts, pauses, resumes and ends the VAD reports."""
        outputs: list[RuntimeData] = []
        params = self.params
        for transition in activity.transitions:
            ms = transition.ms
            span = self._spans[-1] if self._spans and self._spans[-1].end is None else None
            if span is None:
                # A resume after an utterance ended early at a pause (end_turn_above) is
                # new speech: the VAD sends it no start.
                if isinstance(transition, SpeechStarted) or (
                    isinstance(transition, SpeechResumed) and self._ended_early
                ):
                    self._spans.append(self._open(ms - params.pre_roll_ms))
                self._ended_early = False
            elif isinstance(transition, SpeechEnded):
                if params.hold_turn_below is not None and _doubted(span, ms, params):
                    span.held, span.pause = ms, None
                    self.count("turn_held")
                else:
                    span.end, span.pause = ms, None
            elif isinstance(transition, SpeechPaused):
                if params.speculative:
                    span.pause = ms
            else:  # resumed, or started: speech again during a hold
                span.pause = span.held = None
                outputs += self._cancel(span)
        return outputs

    def _on_verdict(self, verdict: TurnVerdict) -> list[RuntimeData]:
        """A SmartTurnNode's judgement of a pause: end there if it is confident enough."""
        span = self._spans[-1] if self._spans and self._spans[-1].end is None else None
        if span is None:
            return []
        # A verdict that names no position matches no pause.
        at_ms = -1.0 if verdict.at_ms is None else verdict.at_ms
        probability = verdict.probability
        span.verdict = (at_ms, probability)
        above = self.params.end_turn_above
        paused_at = span.speculation[1] if span.speculation is not None else span.pause
        if above is not None and probability >= above and paused_at == at_ms:
            span.end, span.pause = at_ms, None
            self._ended_early = True
            self.count("turn_ended_early")
        return []

    def _emit_ready(self) -> list[RuntimeData]:
        """Emit every utterance whose end (or maximum length) is covered by audio."""
        outputs: list[RuntimeData] = []
        longest = self._frames_of(self.params.max_utterance_duration_ms)
        while self._spans:
            span = self._spans[0]
            start = max(self._frame_at(span.start), self._oldest())
            end = self._frame_at(span.end) if span.end is not None else None
            if start + longest <= self._frames and (end is None or end > start + longest):
                outputs += self._cancel(span)
                outputs += self._cut(start, start + longest, span.utterance)
                # The rest is a new utterance, with its own id.
                rest = self._open(self._ms(start + longest))
                self._spans[0] = attrs.evolve(rest, end=span.end, pause=span.pause)
                continue
            if (
                span.held is not None
                and self._ms(self._frames) >= span.held + self.params.hold_turn_ms
            ):
                span.end, end, span.held = span.held, self._frame_at(span.held), None
            if end is None or end > self._frames:
                if span.pause is not None and self._frame_at(span.pause) <= self._frames:
                    outputs += self._speculate(span, start)
                elif self._interim_due(span):
                    span.interim_at = self._ms(self._frames) + self.params.interim_interval_ms
                    outputs += self._cut(start, self._frames, span.utterance, interim=True)
                break
            self._spans.popleft()
            assert span.end is not None
            outputs += self._finish(span, start, end, span.end)
        keep_from = self._frames - self._frames_of(self.params.pre_roll_ms + _HISTORY_SLACK_MS)
        if self._spans:
            keep_from = min(keep_from, self._frame_at(self._spans[0].start))
        self._forget_before(keep_from)
        return outputs

    def _speculate(self, span: _Span, start: int) -> list[RuntimeData]:
        """Emit the open utterance up to its pause as a speculation (if it is not dropped)."""
        assert span.pause is not None
        pause, span.pause = span.pause, None
        outputs = self._cancel(span)
        self._speculations += 1
        speculation = f"{self.node_id}-{self._speculations}"
        cut = self._cut(start, self._frame_at(pause), span.utterance, speculation=speculation)
        if cut:
            span.speculation = (speculation, pause)
            self.count("speculation_started")
        return outputs + cut

    def _cancel(self, span: _Span) -> list[RuntimeData]:
        """Void the span's speculation, if it has one."""
        if span.speculation is None:
            return []
        (speculation, _), span.speculation = span.speculation, None
        self.count("speculation_cancelled")
        return [Control(CANCEL, speculation)]

    def _finish(self, span: _Span, start: int, end: int, end_ms: float) -> list[RuntimeData]:
        """The span is complete: commit its speculation if that ended where it does."""
        if span.speculation is not None and span.speculation[1] == end_ms:
            self.count("speculation_committed")
            return self._cut(start, end, span.utterance, commits=span.speculation[0])
        return self._cancel(span) + self._cut(start, end, span.utterance)

    def _open(self, start_ms: float) -> _Span:
        """A new utterance from ``start_ms`` (stream time), with its own id."""
        self._utterances += 1
        interval = self.params.interim_interval_ms
        return _Span(
            start_ms, f"{self.node_id}-u{self._utterances}", interim_at=start_ms + interval
        )

    def _interim_due(self, span: _Span) -> bool:
        """True when the open span has grown by an interim interval since its last interim."""
        return (
            self.params.interim_interval_ms > 0
            and span.end is None
            and span.speculation is None
            and self._ms(self._frames) >= span.interim_at
        )

    def _cut(
        self,
        start: int,
        end: int,
        utterance: str,
        *,
        speculation: str | None = None,
        commits: str | None = None,
        interim: bool = False,
    ) -> list[RuntimeData]:
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
        samples = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        frames = samples.size // channels
        long_enough = frames * 1000 >= self.params.min_utterance_duration_ms * rate
        loud_enough = bool(samples.size) and (
            float(np.abs(samples).max()) >= self.params.min_peak_amplitude
        )
        if not (frames and long_enough and loud_enough):
            return []
        metadata: dict[str, Any] = {
            "start_ms": round(self._ms(start), 3),
            "end_ms": round(self._ms(end), 3),
            "utterance": utterance,
        }
        if interim:
            metadata[INTERIM] = utterance
        if speculation is not None:
            metadata["speculation"] = speculation
        if commits is not None:
            metadata["commits"] = commits
        return [Audio.adopt(samples, rate, channels, metadata=metadata)]

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


def _doubted(span: _Span, end_ms: float, params: AccumulatorParams) -> bool:
    """True if Smart Turn judged the pause this end confirms an incomplete turn."""
    assert params.hold_turn_below is not None
    return (
        span.verdict is not None
        and span.verdict[0] == end_ms
        and span.verdict[1] < params.hold_turn_below
    )
