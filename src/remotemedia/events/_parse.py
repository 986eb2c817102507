"""Reading a wire dict back as its event (rules 2 to 5 of the package)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from remotemedia.events._base import Event
from remotemedia.events._listening import (
    TRANSITIONS,
    FinalTranscript,
    InterimTranscript,
    SpeechTransition,
    TranscriptSegment,
    TurnVerdict,
    VoiceActivity,
)
from remotemedia.events._replying import (
    Interrupted,
    ReplyPiece,
    ReplySentence,
    ReplyTruncated,
    TurnDone,
    TurnFailed,
)
from remotemedia.media import Json


def event_of(data: object) -> Event | None:
    """The event ``data`` is (itself, or a Json of an event's shape); None if none.

    What a node calls on its input: events made in-process arrive typed; Json from a
    client, or from a caller of the Python API, is read by :func:`parse_event`.
    """
    if isinstance(data, Event):
        return data
    if isinstance(data, Json):
        return parse_event(data.value)
    return None


def parse_event(value: Any) -> Event | None:
    """Read a wire dict (JSON already parsed) as the event of its shape (module rules 2-5).

    Returns:
        The event, whose ``value`` is ``value`` itself; None if ``value`` has no
        event's shape.
    """
    if not isinstance(value, Mapping):
        return None
    parse = _parser_of(value)
    if parse is None:
        return None
    try:
        event = parse(value)
    except _NotThisEvent:
        return None
    object.__setattr__(event, "value", value)  # rule 2: the wire form read, unchanged
    return event


class _NotThisEvent(Exception):
    """A key of the shape has another type than the event's field (rule 5)."""


def _parser_of(value: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], Event] | None:
    """Rule 4: the parser for the shape ``value``'s keys tell."""
    if value.get("interim") is True:
        if "stable" in value or "unstable" in value or not isinstance(value.get("text"), str):
            return _interim
        return _reply_piece
    if "turn_complete" in value:
        return _verdict
    if value.get("interrupted") is True:
        return _interrupted
    if "turn_done" in value:
        return _turn_done
    if "turn" in value:
        if value.get("truncated") is True:
            return _truncated
        if "reply" in value:
            return _sentence
        if "error" in value:
            return _failed
    if any(key in value for key in _ACTIVITY_KEYS):
        return _activity
    if isinstance(value.get("text"), str):
        return _final
    return None


_ACTIVITY_KEYS = ("speech_probability", "events", "is_speech_start", "is_speech_end")
_NUMBER = (int, float)


def _take(value: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """The item under ``key``, which must be of ``kind`` (a bool is not a number)."""
    item = value.get(key)
    if not isinstance(item, kind) or (kind is not bool and isinstance(item, bool)):
        raise _NotThisEvent(key)
    return item


def _maybe(value: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """The item under ``key`` if it is there (and not null); it must then be of ``kind``."""
    return None if value.get(key) is None else _take(value, key, kind)


def _float(item: Any) -> float | None:
    return None if item is None else _to_float(item)


def _to_float(item: Any) -> float:
    try:
        return float(item)
    except OverflowError:  # an integer beyond float's range: JSON allows it, a time does not
        raise _NotThisEvent(repr(item)) from None


def _activity(value: Mapping[str, Any]) -> VoiceActivity:
    return VoiceActivity(
        has_speech=_maybe(value, "has_speech", bool),
        probability=_float(_maybe(value, "speech_probability", _NUMBER)),
        timestamp_ms=_float(_maybe(value, "timestamp_ms", _NUMBER)),
        transitions=_transitions(value),
        rms=_float(_maybe(value, "rms", _NUMBER)),
        peak=_float(_maybe(value, "peak", _NUMBER)),
        samples=_maybe(value, "samples", int),
        sample_rate=_maybe(value, "sample_rate", int),
    )


def _transitions(value: Mapping[str, Any]) -> tuple[SpeechTransition, ...]:
    """The transitions a report lists in ``events``; else those its flags say.

    Items of kinds not known here are skipped (a newer VAD may report more). A report
    of the original runtime has only the flags (``is_speech_start``/``_end``), with
    ``speech_start_ms``/``_end_ms`` or else ``timestamp_ms`` as the time.
    """
    listed = value.get("events")
    if listed is not None:
        if not isinstance(listed, list):
            raise _NotThisEvent("events")
        return tuple(
            TRANSITIONS[item["kind"]](_to_float(_take(item, "ms", _NUMBER)))
            for item in listed
            if isinstance(item, Mapping)
            and isinstance(item.get("kind"), str)
            and item["kind"] in TRANSITIONS
        )
    fallback = _maybe(value, "timestamp_ms", _NUMBER)
    found = []
    for kind in ("start", "end"):
        if _maybe(value, f"is_speech_{kind}", bool):
            ms = _maybe(value, f"speech_{kind}_ms", _NUMBER)
            ms = fallback if ms is None else ms
            found.append(TRANSITIONS[kind](_to_float(ms or 0.0)))
    return tuple(sorted(found, key=lambda transition: transition.ms))


def _verdict(value: Mapping[str, Any]) -> TurnVerdict:
    return TurnVerdict(
        complete=_take(value, "turn_complete", bool),
        probability=_to_float(_take(value, "probability", _NUMBER)),
        at_ms=_float(_maybe(value, "at_ms", _NUMBER)),
        transition=_maybe(value, "event", str),
    )


def _interim(value: Mapping[str, Any]) -> InterimTranscript:
    return InterimTranscript(
        utterance=_take(value, "utterance", str),
        stable=_take(value, "stable", str),
        unstable=_take(value, "unstable", str),
        start_ms=_float(_maybe(value, "start_ms", _NUMBER)),
        end_ms=_float(_maybe(value, "end_ms", _NUMBER)),
    )


def _final(value: Mapping[str, Any]) -> FinalTranscript:
    segments = _maybe(value, "segments", list)
    return FinalTranscript(
        text=_take(value, "text", str),
        segments=None if segments is None else tuple(_segment(s) for s in segments),
        language=_maybe(value, "language", str),
        start_ms=_float(_maybe(value, "start_ms", _NUMBER)),
        end_ms=_float(_maybe(value, "end_ms", _NUMBER)),
        utterance=_maybe(value, "utterance", str),
    )


def _segment(item: Any) -> TranscriptSegment:
    if not isinstance(item, Mapping):
        raise _NotThisEvent("segments")
    return TranscriptSegment(
        _to_float(_take(item, "start", _NUMBER)),
        _to_float(_take(item, "end", _NUMBER)),
        _take(item, "text", str),
    )


def _reply_piece(value: Mapping[str, Any]) -> ReplyPiece:
    return ReplyPiece(_take(value, "text", str))


def _interrupted(value: Mapping[str, Any]) -> Interrupted:
    targets = _take(value, "targets", list)
    if not all(isinstance(target, str) for target in targets):
        raise _NotThisEvent("targets")
    return Interrupted(_take(value, "turn", str), _take(value, "spoken_ms", int), tuple(targets))


def _sentence(value: Mapping[str, Any]) -> ReplySentence:
    return ReplySentence(_take(value, "turn", str), _take(value, "reply", str))


def _truncated(value: Mapping[str, Any]) -> ReplyTruncated:
    return ReplyTruncated(
        _take(value, "turn", str),
        _take(value, "reply_chars", int),
        _take(value, "limit", int),
    )


def _failed(value: Mapping[str, Any]) -> TurnFailed:
    return TurnFailed(_take(value, "turn", str), _take(value, "error", str))


def _turn_done(value: Mapping[str, Any]) -> TurnDone:
    return TurnDone(
        _take(value, "turn_done", str),
        _take(value, "spoken_ms", int),
        _take(value, "reply", str),
    )
