"""The IPC frame codec: round trips (property-tested) and corrupt frames."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from remotemedia import Audio, Binary, Control, Image, Json, Text
from remotemedia.ipc.codec import (
    CorruptFrameError,
    FrameKind,
    decode_data,
    decode_error,
    decode_frame,
    encode_data,
    encode_data_parts,
    encode_end,
    encode_error,
    encode_frame,
    end_count,
    end_work,
)

sessions = st.text(max_size=40)
timestamps = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def audio(draw: st.DrawFn) -> Audio:
    channels = draw(st.integers(1, 8))
    frames = draw(st.integers(0, 64))
    samples = draw(
        hnp.arrays(
            np.float32,
            frames * channels,
            elements=st.floats(-2, 2, allow_nan=False, width=32),
        )
    )
    metadata = draw(st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
    return Audio(samples, draw(st.integers(1, 768_000)), channels, metadata=metadata)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)

data_values = st.one_of(
    audio(),
    st.builds(Text, st.text(), channel=st.sampled_from(["", "ui", "think", "x" * 255])),
    st.builds(Json, json_values),
    st.builds(Binary, st.binary(max_size=100), mime_type=st.text(max_size=30)),
    st.builds(
        lambda w, h, fmt, n, t: Image(
            bytes(int(w * h * {"rgb24": 3, "rgba32": 4, "gray8": 1}[fmt])),
            w,
            h,
            fmt,
            frame_number=n,
            timestamp_us=t,
        ),
        st.integers(1, 8),
        st.integers(1, 8),
        st.sampled_from(["rgb24", "rgba32", "gray8"]),
        st.integers(0, 2**64 - 1),
        timestamps,
    ),
    st.builds(
        Control,
        st.text(min_size=1, max_size=20),
        st.text(max_size=10),
        fields=st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    ),
)


def same(a: object, b: object) -> bool:
    if isinstance(a, Audio) and isinstance(b, Audio):
        return np.array_equal(a.samples, b.samples) and (
            a.sample_rate,
            a.channels,
            dict(a.metadata),
        ) == (b.sample_rate, b.channels, dict(b.metadata))
    return a == b


@settings(max_examples=300, deadline=None)
@given(data_values, sessions, timestamps)
def test_codec_round_trips_every_kind_of_data(data: object, session: str, stamp: int) -> None:
    frame = decode_frame(encode_data(data, session, stamp))  # type: ignore[arg-type]
    assert frame.session_id == session
    if not isinstance(data, Image):
        assert frame.timestamp_us == stamp
    assert same(decode_data(frame), data)


@settings(max_examples=200, deadline=None)
@given(data_values, sessions, timestamps)
def test_codec_frame_pieces_join_to_the_frame(data: object, session: str, stamp: int) -> None:
    parts = encode_data_parts(data, session, stamp)  # type: ignore[arg-type]
    assert b"".join(parts) == encode_data(data, session, stamp)  # type: ignore[arg-type]


def test_codec_audio_pieces_view_float32_samples_without_copying() -> None:
    audio = Audio(np.arange(8, dtype="<f4"), 16_000)
    *_, body = encode_data_parts(audio, "s")
    assert isinstance(body, memoryview)
    assert np.frombuffer(body, "<f4").ctypes.data == audio.samples.ctypes.data


def test_codec_audio_pieces_of_strided_or_float64_samples_are_converted() -> None:
    wide = np.arange(16, dtype=np.float64)[::2]
    joined = b"".join(encode_data_parts(Audio(wide, 8_000), "s"))
    decoded = decode_data(decode_frame(joined))
    assert isinstance(decoded, Audio)
    np.testing.assert_array_equal(decoded.samples, wide.astype(np.float32))


@settings(max_examples=100, deadline=None)
@given(audio())
def test_codec_audio_view_shares_the_buffer_and_is_read_only(value: Audio) -> None:
    buffer = bytearray(encode_data(value, "s"))
    decoded = decode_data(decode_frame(buffer), copy=False)
    assert isinstance(decoded, Audio)
    assert not decoded.samples.flags.writeable
    if decoded.samples.size:
        assert np.shares_memory(decoded.samples, np.frombuffer(buffer, np.uint8))
    copied = decode_data(decode_frame(buffer))
    assert isinstance(copied, Audio)
    if copied.samples.size:
        assert not np.shares_memory(copied.samples, np.frombuffer(buffer, np.uint8))


def test_codec_end_of_input_and_error_frames() -> None:
    end = decode_frame(encode_data(None, "sess", 7))
    assert (end.kind, end.timestamp_us, decode_data(end)) == (FrameKind.END_OF_INPUT, 7, None)
    error = decode_frame(encode_error("model exploded", "RuntimeError", "sess"))
    assert error.kind is FrameKind.ERROR
    assert decode_error(error) == ("model exploded", "RuntimeError")
    with pytest.raises(CorruptFrameError, match="ERROR frames carry no data"):
        decode_data(error)


def test_codec_reads_the_originals_audio_layout() -> None:
    """A frame built by hand exactly as the original's Python node writes it."""
    samples = np.array([0.5, -0.25], "<f4")
    payload = struct.pack("<IHI", 24_000, 1, 0) + samples.tobytes()
    raw = struct.pack("<BH", 1, 3) + b"abc" + struct.pack("<QI", 99, len(payload)) + payload
    decoded = decode_data(decode_frame(raw))
    assert isinstance(decoded, Audio)
    assert (decoded.sample_rate, decoded.channels, decoded.samples.tolist()) == (
        24_000,
        1,
        [0.5, -0.25],
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01", "shorter than its header"),
        (b"\x63\x00\x00" + b"\x00" * 12, "unknown frame kind 99"),
        (struct.pack("<BH", 3, 10) + b"abc", "ends inside its header"),
        (
            struct.pack("<BH", 3, 2) + b"\xff\xfe" + struct.pack("<QI", 0, 0),
            "session id is not valid UTF-8",
        ),
        (
            struct.pack("<BH", 3, 0) + struct.pack("<QI", 0, 5) + b"abc",
            "payload length says 5 bytes but the frame holds 3",
        ),
        (
            struct.pack("<BH", 3, 0) + struct.pack("<QI", 0, 1) + b"ab",
            "payload length says 1 bytes but the frame holds 2",
        ),
    ],
)
def test_codec_rejects_corrupt_frames_with_a_reason(raw: bytes, message: str) -> None:
    with pytest.raises(CorruptFrameError, match=message):
        decode_frame(raw)


@pytest.mark.parametrize(
    ("kind", "payload", "message"),
    [
        (FrameKind.AUDIO, b"\x00\x01", "AUDIO payload is malformed"),
        (FrameKind.AUDIO, struct.pack("<IHI", 16_000, 1, 50) + b"{}", "AUDIO metadata runs past"),
        (FrameKind.AUDIO, struct.pack("<IHI", 16_000, 1, 0) + b"\x00" * 5, "not a multiple of 4"),
        (FrameKind.AUDIO, struct.pack("<IHI", 0, 1, 0), "sample_rate must be a positive integer"),
        (
            FrameKind.AUDIO,
            struct.pack("<IHI", 16_000, 1, 0) + np.array([np.nan], "<f4").tobytes(),
            "NaN",
        ),
        (FrameKind.TEXT, b"\xff", "TEXT payload is malformed"),
        (FrameKind.TEXT, b"\x00\x09ab", "channel tag runs past"),
        (FrameKind.JSON, b"{", "JSON payload is malformed"),
        (FrameKind.BINARY, b"\x09\x00ab", "mime type runs past"),
        (FrameKind.VIDEO, struct.pack("<IIBBQB", 2, 2, 99, 0, 0, 1), "pixel format 99"),
        (FrameKind.VIDEO, struct.pack("<IIBBQB", 2, 2, 4, 0, 0, 1) + b"\x00", "needs 12 bytes"),
        (FrameKind.CONTROL, b"[1]", "needs a JSON object with a message_type"),
    ],
)
def test_codec_rejects_malformed_payloads_with_a_reason(
    kind: FrameKind, payload: bytes, message: str
) -> None:
    with pytest.raises(CorruptFrameError, match=message):
        decode_data(decode_frame(encode_frame(kind, "s", 0, payload)))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_codec_random_bytes_never_raise_anything_but_corrupt_frame(raw: bytes) -> None:
    try:
        frame = decode_frame(raw)
        if frame.kind is FrameKind.ERROR:
            decode_error(frame)
        else:
            decode_data(frame)
    except CorruptFrameError:
        pass


@settings(max_examples=300, deadline=None)
@given(data_values, st.data())
def test_codec_any_truncation_is_detected(data: object, draw: st.DataObject) -> None:
    raw = encode_data(data, "session")  # type: ignore[arg-type]
    cut = draw.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(CorruptFrameError):
        decode_frame(raw[:cut])


def test_end_of_input_carries_the_output_count_or_none() -> None:
    assert end_count(decode_frame(encode_end(3, "s"))) == 3
    assert end_count(decode_frame(encode_data(None, "s"))) is None  # the original's, empty
    with pytest.raises(CorruptFrameError, match="END_OF_INPUT payload is 2 bytes"):
        end_count(decode_frame(encode_frame(FrameKind.END_OF_INPUT, "s", 0, b"xx")))


def test_end_of_input_may_carry_when_the_node_worked() -> None:
    worked = (1_765_000_000_000_000_000, 1_765_000_000_250_000_000)
    frame = decode_frame(encode_end(2, "s", worked_ns=worked))
    assert (end_count(frame), end_work(frame)) == (2, worked)
    assert end_work(decode_frame(encode_end(2, "s"))) is None  # a count alone
    assert end_work(decode_frame(encode_data(None, "s"))) is None  # the original's


@pytest.mark.parametrize("text", ["\x00", "\x00\x05abc", "\x00\x00"])
def test_text_starting_with_nul_round_trips(text: str) -> None:
    """Found by hypothesis: a leading NUL and a byte used to read as a channel tag."""
    assert decode_data(decode_frame(encode_data(Text(text), "s"))) == Text(text)
