"""What the conversation hears: the VAD's reports, Smart Turn's verdicts, transcripts."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from remotemedia.events._base import Event, put

# --- the VAD's report --------------------------------------------------------------


@attrs.frozen
class SpeechTransition:
    """A change of the speech state at ``ms`` (stream time), one item of a VAD report.

    Attributes:
        ms: Milliseconds of stream time since the first input.
    """

    kind: ClassVar[str]
    ms: float

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"kind", "ms"}``."""
        return {"kind": self.kind, "ms": self.ms}


@attrs.frozen
class SpeechStarted(SpeechTransition):
    """Speech started (``kind`` ``start``)."""

    kind: ClassVar[str] = "start"


@attrs.frozen
class SpeechPaused(SpeechTransition):
    """Silence long enough to guess the end (``pause``): a resume or the end follows."""

    kind: ClassVar[str] = "pause"


@attrs.frozen
class SpeechResumed(SpeechTransition):
    """Speech went on after a pause (``resume``)."""

    kind: ClassVar[str] = "resume"


@attrs.frozen
class SpeechEnded(SpeechTransition):
    """Speech ended (``end``); after a pause, at the pause's position."""

    kind: ClassVar[str] = "end"


TRANSITIONS: dict[str, type[SpeechTransition]] = {
    t.kind: t for t in (SpeechStarted, SpeechPaused, SpeechResumed, SpeechEnded)
}


def speech_transition(kind: str, ms: float) -> SpeechTransition:
    """The transition of ``kind`` (``start``, ``pause``, ``resume`` or ``end``) at ``ms``."""
    return TRANSITIONS[kind](ms)


@attrs.frozen(eq=False)
class VoiceActivity(Event):
    """The VAD's report on one chunk of audio (SileroVADNode emits one per chunk).

    Attributes:
        has_speech: The chunk ends in speech.
        probability: The last frame's speech probability (``speech_probability``).
        timestamp_ms: Stream time at the end of the chunk.
        transitions: The speech starts, pauses, resumes and ends in the chunk, in order.
        rms: Root mean square level of the chunk (mono).
        peak: Peak absolute sample of the chunk (mono).
        samples: Frames in the chunk.
        sample_rate: The chunk's sample rate.

    A field that is None is not on the wire (a report at the end of input has no
    chunk; an older runtime's reports have only some of the fields).
    """

    has_speech: bool | None = None
    probability: float | None = None
    timestamp_ms: float | None = None
    transitions: tuple[SpeechTransition, ...] = ()
    rms: float | None = None
    peak: float | None = None
    samples: int | None = None
    sample_rate: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The wire form, the original runtime's VAD event.

        ``{has_speech, speech_probability, is_speech_start, is_speech_end,
        timestamp_ms, speech_start_ms?, speech_end_ms?, events?, rms, peak, samples,
        sample_rate}``: the flags say whether a start/end is in the chunk, the
        ``speech_*_ms`` keys when (the last of each kind), ``events`` lists them all.
        """
        transitions = self.transitions
        value: dict[str, Any] = {}
        put(value, "has_speech", self.has_speech)
        put(value, "speech_probability", self.probability)
        value["is_speech_start"] = any(isinstance(t, SpeechStarted) for t in transitions)
        value["is_speech_end"] = any(isinstance(t, SpeechEnded) for t in transitions)
        put(value, "timestamp_ms", self.timestamp_ms)
        for transition in transitions:
            if isinstance(transition, SpeechStarted | SpeechEnded):
                value[f"speech_{transition.kind}_ms"] = transition.ms
        if transitions:
            value["events"] = [t.to_json() for t in transitions]
        put(value, "rms", self.rms)
        put(value, "peak", self.peak)
        put(value, "samples", self.samples)
        put(value, "sample_rate", self.sample_rate)
        return value


@attrs.frozen(eq=False)
class TurnVerdict(Event):
    """Smart Turn's judgement of a pause or end: is the user's turn complete?

    Attributes:
        complete: The probability reached the node's threshold (``turn_complete``).
        probability: How likely the turn is complete.
        at_ms: Stream time of the pause or end judged.
        transition: What was judged: ``pause`` or ``end`` (``event``).
    """

    complete: bool
    probability: float
    at_ms: float | None = None
    transition: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``{turn_complete, probability, at_ms, event}``."""
        value: dict[str, Any] = {"turn_complete": self.complete, "probability": self.probability}
        put(value, "at_ms", self.at_ms)
        put(value, "event", self.transition)
        return value


# --- transcripts -------------------------------------------------------------------


@attrs.frozen
class TranscriptSegment:
    """One segment of a final transcript: seconds into the utterance, and its text."""

    start: float
    end: float
    text: str

    def to_json(self) -> dict[str, Any]:
        """``{start, end, text}``."""
        return {"start": self.start, "end": self.end, "text": self.text}


@attrs.frozen(eq=False)
class InterimTranscript(Event):
    """Whisper's transcript of an utterance so far, while it goes on.

    Attributes:
        utterance: The accumulator's id of the utterance.
        stable: Words that successive interims agreed on (they stay).
        unstable: The words after them, which may still change.
        start_ms: Stream time the utterance starts.
        end_ms: Stream time of the end of the audio transcribed.
    """

    utterance: str
    stable: str
    unstable: str
    start_ms: float | None = None
    end_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        """``{interim: true, utterance, stable, unstable, start_ms?, end_ms?}``."""
        value: dict[str, Any] = {
            "interim": True,
            "utterance": self.utterance,
            "stable": self.stable,
            "unstable": self.unstable,
        }
        put(value, "start_ms", self.start_ms)
        put(value, "end_ms", self.end_ms)
        return value


@attrs.frozen(eq=False)
class FinalTranscript(Event):
    """What the user said in one utterance: Whisper's final transcript, or a client's words.

    Attributes:
        text: The transcript.
        segments: Its segments (Whisper's; None when a client sent only text).
        language: The language code.
        start_ms: Stream time the utterance starts.
        end_ms: Stream time the utterance ends.
        utterance: The accumulator's id of the utterance.
    """

    text: str
    segments: tuple[TranscriptSegment, ...] | None = None
    language: str | None = None
    start_ms: float | None = None
    end_ms: float | None = None
    utterance: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``{text, segments, language, start_ms?, end_ms?, utterance?}``."""
        value: dict[str, Any] = {"text": self.text}
        if self.segments is not None:
            value["segments"] = [s.to_json() for s in self.segments]
        put(value, "language", self.language)
        put(value, "start_ms", self.start_ms)
        put(value, "end_ms", self.end_ms)
        put(value, "utterance", self.utterance)
        return value
