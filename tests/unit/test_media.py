"""Unit tests for the media value types in remotemedia.media."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from remotemedia.errors import InvalidMediaError, RemoteMediaError
from remotemedia.media import (
    MAX_CHANNELS,
    Audio,
    Binary,
    Control,
    Image,
    Json,
    Text,
    kind_of,
)

# --- Audio validation ------------------------------------------------------------


@pytest.mark.parametrize("rate", [0, -16_000])
def test_audio_rejects_non_positive_sample_rate(rate: int) -> None:
    with pytest.raises(
        InvalidMediaError, match=rf"sample_rate must be a positive integer, got {rate}"
    ):
        Audio(np.zeros(4, np.float32), rate)


def test_audio_rejects_float_sample_rate() -> None:
    with pytest.raises(InvalidMediaError, match="sample_rate"):
        Audio(np.zeros(4, np.float32), 16_000.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("channels", [0, MAX_CHANNELS + 1])
def test_audio_rejects_channel_count_out_of_range(channels: int) -> None:
    with pytest.raises(InvalidMediaError, match=rf"between 1 and 8, got {channels}\b"):
        Audio(np.zeros(72, np.float32), 16_000, channels)


def test_audio_accepts_max_channels() -> None:
    audio = Audio(np.zeros(16, np.float32), 16_000, MAX_CHANNELS)
    assert audio.num_frames == 2


def test_audio_rejects_samples_not_divisible_by_channels() -> None:
    with pytest.raises(
        InvalidMediaError, match="5 samples, which is not divisible by its 2 channels"
    ):
        Audio(np.zeros(5, np.float32), 16_000, 2)


@pytest.mark.parametrize(
    ("bad", "shown"), [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")]
)
def test_audio_rejects_non_finite_sample_naming_its_index(bad: float, shown: str) -> None:
    samples = np.zeros(10, np.float32)
    samples[7] = bad
    samples[9] = bad
    with pytest.raises(InvalidMediaError, match=rf"Audio sample 7 is {shown};") as info:
        Audio(samples, 16_000)
    assert isinstance(info.value, RemoteMediaError)
    assert isinstance(info.value, ValueError)


def test_audio_rejects_three_dimensional_samples() -> None:
    with pytest.raises(InvalidMediaError, match=r"1-D interleaved array, got shape \(2, 2, 2\)"):
        Audio(np.zeros((2, 2, 2), np.float32), 16_000)


def test_audio_interleaves_two_dimensional_frames() -> None:
    frames = np.array([[0.1, -0.1], [0.2, -0.2], [0.3, -0.3]], np.float64)
    audio = Audio(frames, 48_000, 2)
    expected = np.array([0.1, -0.1, 0.2, -0.2, 0.3, -0.3], np.float32)
    np.testing.assert_array_equal(audio.samples, expected)
    assert audio.samples.dtype == np.float32
    assert audio.samples.ndim == 1
    np.testing.assert_array_equal(audio.frames(), frames.astype(np.float32))


def test_audio_samples_are_read_only() -> None:
    audio = Audio([0.0, 0.5, -0.5], 8_000)
    assert not audio.samples.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        audio.samples[0] = 1.0


def test_audio_copies_callers_writeable_float32_array() -> None:
    mine = np.linspace(-1, 1, 8, dtype=np.float32)
    audio = Audio(mine, 16_000)
    assert mine.flags.writeable
    mine[0] = 0.25  # the caller keeps using their array
    assert audio.samples[0] == np.float32(-1.0)
    assert not np.shares_memory(mine, audio.samples)


def test_audio_two_dimensional_input_does_not_alias_callers_array() -> None:
    mine = np.zeros((4, 2), np.float32)
    audio = Audio(mine, 16_000, 2)
    mine[0, 0] = 1.0
    assert audio.samples[0] == np.float32(0.0)


def test_audio_keeps_read_only_array_without_copy() -> None:
    frozen = np.arange(6, dtype=np.float32) / 10
    frozen.flags.writeable = False
    audio = Audio(frozen, 16_000)
    assert audio.samples is frozen


def test_audio_num_frames_duration_frames_and_mono() -> None:
    samples = np.array([0.2, 0.4, -0.6, 0.0, 1.0, -1.0, 0.5, 0.5], np.float32)
    audio = Audio(samples, 4, 2)
    assert audio.num_frames == 4
    assert audio.duration == pytest.approx(1.0)
    frames = audio.frames()
    assert frames.shape == (4, 2)
    assert not frames.flags.writeable
    np.testing.assert_array_equal(frames[:, 1], samples[1::2])
    mono = audio.mono()
    assert mono.dtype == np.float32
    np.testing.assert_allclose(mono, [0.3, -0.3, 0.0, 0.5], atol=1e-7)


def test_audio_mono_of_mono_is_the_samples() -> None:
    audio = Audio(np.array([0.1, 0.2, 0.3], np.float32), 16_000)
    assert audio.mono() is audio.samples
    assert audio.duration == pytest.approx(3 / 16_000)


def test_audio_metadata_defaults_empty_and_is_kept() -> None:
    assert dict(Audio([0.0], 8_000).metadata) == {}
    audio = Audio([0.0], 8_000, metadata={"stream": "a"})
    assert audio.metadata["stream"] == "a"


@given(
    channels=st.integers(1, MAX_CHANNELS),
    frames=st.integers(0, 64),
    data=st.data(),
)
def test_audio_any_finite_interleaved_array_round_trips(
    channels: int, frames: int, data: st.DataObject
) -> None:
    samples = data.draw(
        hnp.arrays(
            np.float32,
            frames * channels,
            elements=st.floats(-4, 4, width=32, allow_nan=False, allow_infinity=False),
        )
    )
    audio = Audio(samples, 16_000, channels)
    np.testing.assert_array_equal(audio.samples, samples)
    assert audio.num_frames == frames
    assert audio.frames().shape == (frames, channels)
    np.testing.assert_array_equal(audio.frames().reshape(-1), samples)


# --- Text, Json, Binary --------------------------------------------------------------


def test_text_default_channel_and_equality() -> None:
    assert Text("hi").channel == ""
    assert Text("hi", channel="tts") == Text("hi", channel="tts")
    assert Text("hi") != Text("hi", channel="tts")


def test_text_rejects_non_string() -> None:
    with pytest.raises(TypeError):
        Text(b"bytes")  # type: ignore[arg-type]


def test_json_accepts_nested_values_and_compares_by_value() -> None:
    value = {"a": [1, 2.5, None, True], "b": {"c": "d"}}
    assert Json(value) == Json({"a": [1, 2.5, None, True], "b": {"c": "d"}})
    assert Json(value) != Json({"a": []})
    assert Json(value) != value


def test_json_is_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(Json(1))


def test_json_rejects_non_serialisable_value_naming_where() -> None:
    with pytest.raises(InvalidMediaError, match=r"at \$\.when\b.*object.*JSON cannot represent"):
        Json({"ok": [1, 2], "when": object()})


@pytest.mark.parametrize(
    ("bad", "where"),
    [(math.nan, r"\$ is nan"), (math.inf, r"\$ is inf"), ([1.0, -math.inf], r"\$\[1\] is -inf")],
)
def test_json_rejects_nan_and_infinity(bad: object, where: str) -> None:
    with pytest.raises(InvalidMediaError, match=rf"{where}; JSON has no NaN or Infinity"):
        Json(bad)


def test_json_rejects_circular_structure() -> None:
    loop: list[object] = [1]
    loop.append(loop)
    with pytest.raises(InvalidMediaError):
        Json(loop)


def test_binary_converts_to_bytes_with_default_mime_type() -> None:
    blob = Binary(bytearray(b"\x00\x01"))
    assert blob.data == b"\x00\x01"
    assert type(blob.data) is bytes
    assert blob.mime_type == "application/octet-stream"
    assert Binary(b"x", mime_type="image/png").mime_type == "image/png"


# --- Image -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "width", "height", "size"),
    [("rgb24", 4, 2, 24), ("rgba32", 3, 3, 36), ("gray8", 5, 1, 5), ("yuv420p", 4, 4, 24)],
)
def test_image_accepts_exact_pixel_size(fmt: str, width: int, height: int, size: int) -> None:
    image = Image(bytes(size), width, height, fmt)  # type: ignore[arg-type]
    assert len(image.pixels) == size
    assert (image.frame_number, image.timestamp_us) == (0, 0)


def test_image_rejects_pixel_size_mismatch() -> None:
    with pytest.raises(InvalidMediaError, match="4x2 rgb24 needs 24 bytes of pixels, got 23"):
        Image(bytes(23), 4, 2)


def test_image_rejects_unknown_pixel_format() -> None:
    with pytest.raises(InvalidMediaError, match="pixel_format 'bgr48' is unknown; use one of"):
        Image(bytes(4), 2, 2, "bgr48")  # type: ignore[arg-type]


@pytest.mark.parametrize(("width", "height"), [(0, 2), (2, 0), (-1, 4)])
def test_image_rejects_non_positive_size(width: int, height: int) -> None:
    with pytest.raises(InvalidMediaError, match=f"positive, got {width}x{height}"):
        Image(b"", width, height)


# --- Control and kind_of -----------------------------------------------------------


def test_control_defaults() -> None:
    control = Control("cancel_speculation")
    assert control.segment_id == ""
    assert dict(control.fields) == {}
    assert Control("x", "seg-1", fields={"a": 1}).fields["a"] == 1


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (Audio([0.0], 8_000), "audio"),
        (Text("t"), "text"),
        (Json(None), "json"),
        (Binary(b""), "binary"),
        (Image(bytes(1), 1, 1, "gray8"), "image"),
        (Control("stop"), "control"),
    ],
)
def test_kind_of_names_each_variant(value: object, kind: str) -> None:
    assert kind_of(value) == kind  # type: ignore[arg-type]


def test_kind_of_rejects_foreign_value() -> None:
    with pytest.raises(KeyError):
        kind_of("plain string")  # type: ignore[arg-type]
