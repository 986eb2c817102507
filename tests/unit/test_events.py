"""The typed events between nodes: their wire form is the old dicts', byte for byte."""

from __future__ import annotations

import json
from typing import Any

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remotemedia.errors import InvalidMediaError
from remotemedia.events import (
    Event,
    FinalTranscript,
    InterimTranscript,
    Interrupted,
    ReplyPiece,
    ReplySentence,
    ReplyTruncated,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TranscriptSegment,
    TurnDone,
    TurnFailed,
    TurnVerdict,
    VoiceActivity,
    event_of,
    parse_event,
)
from remotemedia.ipc.codec import decode_data, decode_frame, encode_data
from remotemedia.media import Audio, Json, Text, kind_of, payload_size
from remotemedia.nodes.audio.segmenter import SpeechEvent
from remotemedia.nodes.audio.vad import SileroVADNode, VADParams
from remotemedia.service.convert import data_from_wire, data_to_wire

# Each event, and the dict its node built before events were typed (literally).
CASES: list[tuple[Event, dict[str, Any]]] = [
    (
        VoiceActivity(
            has_speech=True,
            probability=0.9123,
            timestamp_ms=1024.0,
            transitions=(SpeechEnded(500.0), SpeechStarted(700.5), SpeechPaused(900.0)),
            rms=0.01234,
            peak=0.5,
            samples=512,
            sample_rate=16_000,
        ),
        {
            "has_speech": True,
            "speech_probability": 0.9123,
            "is_speech_start": True,
            "is_speech_end": True,
            "timestamp_ms": 1024.0,
            "speech_end_ms": 500.0,
            "speech_start_ms": 700.5,
            "events": [
                {"kind": "end", "ms": 500.0},
                {"kind": "start", "ms": 700.5},
                {"kind": "pause", "ms": 900.0},
            ],
            "rms": 0.01234,
            "peak": 0.5,
            "samples": 512,
            "sample_rate": 16_000,
        },
    ),
    (  # the report at the end of input: no chunk
        VoiceActivity(
            has_speech=False,
            probability=0.1,
            timestamp_ms=2000.0,
            transitions=(SpeechResumed(1900.0), SpeechEnded(1990.0)),
        ),
        {
            "has_speech": False,
            "speech_probability": 0.1,
            "is_speech_start": False,
            "is_speech_end": True,
            "timestamp_ms": 2000.0,
            "speech_end_ms": 1990.0,
            "events": [{"kind": "resume", "ms": 1900.0}, {"kind": "end", "ms": 1990.0}],
        },
    ),
    (
        TurnVerdict(complete=False, probability=0.2718, at_ms=1500.0, transition="pause"),
        {"turn_complete": False, "probability": 0.2718, "at_ms": 1500.0, "event": "pause"},
    ),
    (
        InterimTranscript("acc-u1", "book a", "table", start_ms=100.0, end_ms=1600.0),
        {
            "interim": True,
            "utterance": "acc-u1",
            "stable": "book a",
            "unstable": "table",
            "start_ms": 100.0,
            "end_ms": 1600.0,
        },
    ),
    (
        FinalTranscript(
            "Book a table.",
            segments=(TranscriptSegment(0.0, 1.5, "Book a table."),),
            language="en",
            start_ms=100.0,
            end_ms=1600.0,
            utterance="acc-u1",
        ),
        {
            "text": "Book a table.",
            "segments": [{"start": 0.0, "end": 1.5, "text": "Book a table."}],
            "language": "en",
            "start_ms": 100.0,
            "end_ms": 1600.0,
            "utterance": "acc-u1",
        },
    ),
    (
        FinalTranscript("", segments=(), language="en"),
        {"text": "", "segments": [], "language": "en"},
    ),
    (ReplyPiece("It will"), {"text": "It will", "interim": True}),
    (
        Interrupted("coordinator-t1", 640, ("llm", "audio")),
        {
            "interrupted": True,
            "turn": "coordinator-t1",
            "spoken_ms": 640,
            "targets": ["llm", "audio"],
        },
    ),
    (
        ReplySentence("coordinator-t1", "You said: hello."),
        {"turn": "coordinator-t1", "reply": "You said: hello."},
    ),
    (
        ReplyTruncated("coordinator-t1", 4_006, 4_000),
        {"turn": "coordinator-t1", "truncated": True, "reply_chars": 4_006, "limit": 4_000},
    ),
    (
        TurnFailed("coordinator-t2", "the responder sent nothing for 45 s"),
        {"turn": "coordinator-t2", "error": "the responder sent nothing for 45 s"},
    ),
    (
        TurnDone("coordinator-t1", 2000, "You said: hello."),
        {"turn_done": "coordinator-t1", "spoken_ms": 2000, "reply": "You said: hello."},
    ),
]
IDS = [type(event).__name__ for event, _ in CASES]


def fields(event: Event) -> dict[str, Any]:
    """The typed fields of an event (not its wire value)."""
    return {a.name: getattr(event, a.name) for a in attrs.fields(type(event)) if a.name != "value"}


@pytest.mark.parametrize(("event", "old"), CASES, ids=IDS)
def test_event_json_is_the_old_dict_with_its_key_order(event: Event, old: dict[str, Any]) -> None:
    assert isinstance(event, Json)
    assert list(event.value.items()) == list(old.items())
    assert json.dumps(event.value) == json.dumps(old)
    assert event == Json(old)
    assert kind_of(event) == "json"
    assert payload_size(event) == Json(old).size


@pytest.mark.parametrize(("event", "old"), CASES, ids=IDS)
def test_event_crosses_the_ipc_codec_as_the_same_typed_event(
    event: Event, old: dict[str, Any]
) -> None:
    frame = encode_data(event, "session")
    assert frame == encode_data(Json(old), "session")
    decoded = decode_data(decode_frame(frame))
    assert type(decoded) is type(event)
    assert isinstance(decoded, Event)
    assert fields(decoded) == fields(event)
    assert list(decoded.value.items()) == list(old.items())


@pytest.mark.parametrize(("event", "old"), CASES, ids=IDS)
def test_event_goes_to_a_client_as_the_old_json_bytes(event: Event, old: dict[str, Any]) -> None:
    wire = data_to_wire(event)
    assert wire.SerializeToString() == data_to_wire(Json(old)).SerializeToString()
    assert wire.json.json_payload == json.dumps(old, separators=(",", ":"))
    back = event_of(data_from_wire(wire, "$.data"))
    assert type(back) is type(event)
    assert back is not None
    assert fields(back) == fields(event)


def test_event_parsed_keeps_the_dict_it_read() -> None:
    # A client's transcript with a key no field holds passes through unchanged.
    value = {"text": "hello", "client_id": 7}
    event = parse_event(value)
    assert isinstance(event, FinalTranscript)
    assert event.text == "hello"
    assert event.value is value


def test_event_parsed_from_the_original_runtimes_flags_lists_its_transitions() -> None:
    event = parse_event(
        {"is_speech_start": True, "is_speech_end": True, "speech_end_ms": 50, "timestamp_ms": 90}
    )
    assert isinstance(event, VoiceActivity)
    assert event.transitions == (SpeechEnded(50.0), SpeechStarted(90.0))  # in time order
    assert event.probability is None


def test_event_parse_skips_transitions_of_unknown_kinds() -> None:
    event = parse_event({"events": [{"kind": "start", "ms": 1}, {"kind": "breath", "ms": 2}, 3]})
    assert isinstance(event, VoiceActivity)
    assert event.transitions == (SpeechStarted(1.0),)


def test_event_parse_tells_a_reply_piece_from_an_interim_transcript() -> None:
    assert isinstance(parse_event({"text": "It", "interim": True}), ReplyPiece)
    interim = {"interim": True, "utterance": "u", "stable": "", "unstable": "it"}
    assert isinstance(parse_event(interim), InterimTranscript)


@pytest.mark.parametrize(
    "value",
    [
        [1, 2],
        "text",
        {"other": 1},
        {"interim": True, "utterance": "u", "stable": 1, "unstable": ""},
        {"turn_complete": True, "probability": "high"},
        {"turn_complete": True, "probability": True},
        {"events": [{"kind": "start", "ms": "soon"}]},
        {"events": "start"},
        {"text": "hi", "segments": [{"start": 0}]},
        {"interrupted": True, "turn": "t1", "spoken_ms": 1.5, "targets": ["audio"]},
        {"turn_done": "t1", "spoken_ms": 10, "reply": None},
        {"speech_probability": 0.5, "timestamp_ms": 10**400},
    ],
)
def test_event_parse_leaves_other_json_plain(value: Any) -> None:
    assert parse_event(value) is None
    assert event_of(Json(value)) is None


# Keys of the events' shapes, so that random objects often look like one.
SHAPE_KEYS = [
    "text",
    "interim",
    "stable",
    "unstable",
    "utterance",
    "turn",
    "reply",
    "events",
    "kind",
    "ms",
    "turn_complete",
    "probability",
    "segments",
    "speech_probability",
    "is_speech_start",
    "timestamp_ms",
    "x",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=10)
    | st.sampled_from(["start", "end", "pause", "resume"])
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(SHAPE_KEYS),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_event_parse_never_raises_and_keeps_the_value(value: Any) -> None:
    event = parse_event(value)
    if event is not None:
        assert event.value is value
        assert parse_event(event.to_json()) is not None  # its own wire form reads back


def test_event_evolved_has_the_wire_form_of_its_new_fields() -> None:
    event = attrs.evolve(FinalTranscript("hi", language="en"), utterance="u1")
    assert event.value == {"text": "hi", "language": "en", "utterance": "u1"}


def test_event_with_a_value_json_cannot_hold_is_refused() -> None:
    with pytest.raises(InvalidMediaError, match="NaN"):
        TurnVerdict(complete=True, probability=float("nan"))


def test_event_of_other_data_is_none() -> None:
    assert event_of(Text("hello")) is None
    assert event_of(Audio(np.zeros(4, np.float32), 16_000)) is None


# --- the VAD's report against the dict the node built before ----------------------


def old_vad_event(node: SileroVADNode, events: list[SpeechEvent], chunk: Audio | None) -> Any:
    """SileroVADNode._event as it was when it built a dict (the reference)."""
    model_rate = node.params.sampling_rate
    transitions = [{"kind": e.kind, "ms": round(e.position * 1000 / model_rate, 3)} for e in events]
    edges = [t for t in transitions if t["kind"] in ("start", "end")]
    value: dict[str, Any] = {
        "has_speech": node._segmenter.in_speech,
        "speech_probability": round(node._probability, 4),
        "is_speech_start": any(e.kind == "start" for e in events),
        "is_speech_end": any(e.kind == "end" for e in events),
        "timestamp_ms": round(node._stream_ms, 3),
    }
    for transition in edges:
        value[f"speech_{transition['kind']}_ms"] = transition["ms"]
    if transitions:
        value["events"] = transitions
    if chunk is not None:
        mono = chunk.mono()
        value["rms"] = round(float(np.sqrt(np.mean(mono * mono))), 5) if mono.size else 0.0
        value["peak"] = round(float(np.abs(mono).max()), 5) if mono.size else 0.0
        value["samples"] = chunk.num_frames
        value["sample_rate"] = chunk.sample_rate
    return value


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(
            SpeechEvent,
            st.sampled_from(["start", "pause", "resume", "end"]),
            st.integers(0, 10**7),
        ),
        max_size=5,
    ),
    st.floats(0, 1),
    st.floats(0, 10**7),
    st.none() | st.integers(0, 600),
    st.sampled_from([8_000, 16_000]),
)
def test_event_of_the_vad_is_the_dict_it_built_before(
    events: list[SpeechEvent],
    probability: float,
    stream_ms: float,
    frames: int | None,
    rate: int,
) -> None:
    node = SileroVADNode("vad", VADParams(sampling_rate=rate))
    node._probability, node._stream_ms = probability, stream_ms
    chunk = None
    if frames is not None:
        chunk = Audio(np.linspace(-0.5, 0.25, frames, dtype=np.float32), 44_100)
    report = node._event(events, chunk)
    old = old_vad_event(node, events, chunk)
    assert list(report.value.items()) == list(old.items())
    assert json.dumps(report.value) == json.dumps(old)
    decoded = decode_data(decode_frame(encode_data(report, "s")))
    assert isinstance(decoded, VoiceActivity)
    assert fields(decoded) == fields(report)
