"""Media values that flow between nodes: :data:`RuntimeData` and its variants.

Every variant is an immutable attrs class validated on construction, so a node never
sees malformed data: audio samples are finite float32, interleaved, with a sample
count divisible by the channel count. Audio arrays are made read-only because one
value may be fanned out to several nodes at once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

import attrs
import numpy as np
import numpy.typing as npt

from remotemedia.errors import InvalidMediaError

__all__ = [
    "INTERIM",
    "MAX_CHANNELS",
    "Audio",
    "Binary",
    "Control",
    "Image",
    "Json",
    "RuntimeData",
    "Text",
    "check_json",
    "kind_of",
    "payload_size",
]

MAX_CHANNELS = 8
"""Largest channel count an :class:`Audio` value may have."""

INTERIM = "interim"
"""Metadata key that marks an input as an interim: worth processing only if nothing newer waits.

A session skips such an input (and counts ``interim_skipped`` for the node) when
another input already waits behind it, so interim work is dropped, not queued, while
the node is busy. An accumulator's interim utterances carry it.
"""

Float32Array: TypeAlias = npt.NDArray[np.float32]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _as_samples(value: Any) -> Float32Array:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim == 2:
        # A (frames, channels) array is interleaved by flattening row-major; other
        # shapes are ambiguous and rejected by the validation below.
        array = array.reshape(-1)
    if array.flags.writeable:
        if isinstance(value, np.ndarray) and np.may_share_memory(array, value):
            # The caller's own array (or a view of it): copy, so that neither can
            # change the other, and never freeze the caller's array under their feet.
            array = array.copy()
        array.flags.writeable = False
    return array


@attrs.frozen(eq=False)
class Audio:
    """A block of PCM audio.

    Attributes:
        samples: Interleaved float32 samples, nominally in [-1, 1], read-only.
        sample_rate: Samples per second per channel, > 0.
        channels: Number of interleaved channels, 1 to 8.
        metadata: Free-form annotations (stream ids, timestamps) carried along.
    """

    samples: Float32Array = attrs.field(converter=_as_samples)
    sample_rate: int = attrs.field()
    channels: int = attrs.field(default=1)
    metadata: Mapping[str, Any] = attrs.field(default=_EMPTY, kw_only=True)

    def __attrs_post_init__(self) -> None:
        samples = self.samples
        if samples.ndim != 1:
            raise InvalidMediaError(
                f"Audio samples must be a 1-D interleaved array, got shape {samples.shape}."
            )
        if not isinstance(self.sample_rate, int | np.integer) or self.sample_rate <= 0:
            raise InvalidMediaError(
                f"Audio sample_rate must be a positive integer, got {self.sample_rate!r}."
            )
        if not isinstance(self.channels, int | np.integer) or not (
            1 <= self.channels <= MAX_CHANNELS
        ):
            raise InvalidMediaError(
                f"Audio channels must be between 1 and {MAX_CHANNELS}, got {self.channels!r}."
            )
        if samples.size % self.channels:
            raise InvalidMediaError(
                f"Audio has {samples.size} samples, which is not divisible by its "
                f"{self.channels} channels; samples must be interleaved whole frames."
            )
        if not np.isfinite(samples).all():
            bad = int(np.flatnonzero(~np.isfinite(samples))[0])
            raise InvalidMediaError(
                f"Audio sample {bad} is {samples[bad]}; NaN and infinite samples are not "
                "allowed. Check the decoder or the DSP stage that produced this audio."
            )

    @classmethod
    def adopt(
        cls,
        samples: Float32Array,
        sample_rate: int,
        channels: int = 1,
        *,
        metadata: Mapping[str, Any] = _EMPTY,
    ) -> Audio:
        """Wrap a float32 array the caller hands over, without copying it.

        The array is made read-only; the caller must not keep writing to it (through
        other views either). Nodes use this for arrays they just produced.
        """
        if samples.dtype == np.float32:
            samples.flags.writeable = False
        return cls(samples, sample_rate, channels, metadata=metadata)

    @property
    def num_frames(self) -> int:
        """Samples per channel."""
        return self.samples.size // self.channels

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.sample_rate

    def frames(self) -> Float32Array:
        """Return the samples as a read-only ``(num_frames, channels)`` view."""
        return self.samples.reshape(-1, self.channels)

    def mono(self) -> Float32Array:
        """Return a mono mixdown (the channel average) as a 1-D float32 array."""
        if self.channels == 1:
            return self.samples
        mixed: Float32Array = self.frames().mean(axis=1, dtype=np.float32)
        return mixed


@attrs.frozen
class Text:
    """UTF-8 text, optionally tagged with a channel (``""`` means the default channel)."""

    text: str = attrs.field(validator=attrs.validators.instance_of(str))
    channel: str = attrs.field(default="", kw_only=True)


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str) or not _is_json(inner):
                return False
        return True
    if isinstance(value, list | tuple):
        return all(_is_json(inner) for inner in value)
    return False


def _json_problem(value: Any, path: str) -> str:
    """Explain why a value that failed :func:`_is_json` is not JSON (the slow path)."""
    if isinstance(value, float):
        return f"Json value at {path} is {value}; JSON has no NaN or Infinity."
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str):
                return f"Json object at {path} has the key {key!r}; JSON keys must be strings."
            if not _is_json(inner):
                return _json_problem(inner, f"{path}.{key}")
    if isinstance(value, list | tuple):
        for index, inner in enumerate(value):
            if not _is_json(inner):
                return _json_problem(inner, f"{path}[{index}]")
    return f"Json value at {path} is a {type(value).__name__}, which JSON cannot represent."


def check_json(value: Any) -> None:
    """Check that ``value`` is JSON, as :class:`Json` does on construction.

    Raises:
        InvalidMediaError: It is not; the message says where and why.
    """
    # A walk over the value is several times cheaper than json.dumps, and a VAD
    # node creates one Json per audio chunk; paths are built only on failure.
    try:
        valid = _is_json(value)
    except RecursionError:
        raise InvalidMediaError(
            "Json value is nested too deeply or contains itself; JSON must be a finite tree."
        ) from None
    if not valid:
        raise InvalidMediaError(_json_problem(value, "$"))


def _check_json(instance: Json, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_json(value)


@attrs.frozen(eq=False)
class Json:
    """A JSON value (object, array, string, number, boolean or null)."""

    value: Any = attrs.field(validator=_check_json)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Json) and other.value == self.value

    @functools.cached_property
    def size(self) -> int:
        """Roughly how many bytes the value holds (its JSON text, give or take)."""
        return _json_size(self.value)

    __hash__ = None  # type: ignore[assignment]


@attrs.frozen
class Binary:
    """Opaque bytes with a MIME type."""

    data: bytes = attrs.field(converter=bytes)
    mime_type: str = attrs.field(default="application/octet-stream", kw_only=True)


PixelFormat = Literal["rgb24", "rgba32", "yuv420p", "gray8"]
_BYTES_PER_PIXEL: dict[str, float] = {"rgb24": 3, "rgba32": 4, "yuv420p": 1.5, "gray8": 1}


@attrs.frozen
class Image:
    """One raw video frame or still image.

    Attributes:
        pixels: Raw pixel bytes in ``pixel_format`` layout.
        width: Width in pixels, > 0.
        height: Height in pixels, > 0.
        pixel_format: One of ``rgb24``, ``rgba32``, ``yuv420p``, ``gray8``.
        frame_number: Position of the frame in its stream.
        timestamp_us: Presentation time in microseconds.
    """

    pixels: bytes = attrs.field(converter=bytes)
    width: int
    height: int
    pixel_format: PixelFormat = "rgb24"
    frame_number: int = attrs.field(default=0, kw_only=True)
    timestamp_us: int = attrs.field(default=0, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise InvalidMediaError(
                f"Image width and height must be positive, got {self.width}x{self.height}."
            )
        per_pixel = _BYTES_PER_PIXEL.get(self.pixel_format)
        if per_pixel is None:
            known = ", ".join(_BYTES_PER_PIXEL)
            raise InvalidMediaError(
                f"Image pixel_format {self.pixel_format!r} is unknown; use one of {known}."
            )
        expected = int(self.width * self.height * per_pixel)
        if len(self.pixels) != expected:
            raise InvalidMediaError(
                f"Image of {self.width}x{self.height} {self.pixel_format} needs {expected} "
                f"bytes of pixels, got {len(self.pixels)}."
            )


@attrs.frozen
class Control:
    """An in-band control message (for example ``cancel_speculation``).

    Attributes:
        kind: What the message asks for.
        segment_id: The media segment it refers to, if any.
        fields: Further arguments of the message.
    """

    kind: str
    segment_id: str = ""
    fields: Mapping[str, Any] = attrs.field(default=_EMPTY, kw_only=True)


RuntimeData: TypeAlias = Audio | Text | Json | Binary | Image | Control
"""Any value that can flow along a pipeline edge."""

_KINDS: dict[type, str] = {
    Audio: "audio",
    Text: "text",
    Json: "json",
    Binary: "binary",
    Image: "image",
    Control: "control",
}


def _json_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, Mapping):
        return 2 + sum(len(key) + 4 + _json_size(inner) for key, inner in value.items())
    if isinstance(value, list | tuple):
        return 2 + sum(1 + _json_size(inner) for inner in value)
    return 8  # a number, true, false or null


_CONTROL_SIZE = 64


def payload_size(data: RuntimeData) -> int:
    """Roughly how many bytes a value holds: exact for audio, bytes and pixels.

    What byte budgets count (see :mod:`remotemedia.session.budget`); cheap to call
    (a Json value computes its size once).
    """
    if isinstance(data, Audio):
        return int(data.samples.nbytes)
    if isinstance(data, Binary):
        return len(data.data)
    if isinstance(data, Text):
        return len(data.text)
    if isinstance(data, Json):
        return data.size
    if isinstance(data, Image):
        return len(data.pixels)
    return _CONTROL_SIZE


def kind_of(data: RuntimeData) -> str:
    """Return the short kind name of a value: ``audio``, ``text``, ``json``, ...

    A subclass has its base's kind (the typed events of :mod:`remotemedia.events`
    are Json).

    Raises:
        KeyError: ``data`` is no runtime value.
    """
    kind = _KINDS.get(type(data))
    if kind is None:
        kind = next((_KINDS[c] for c in type(data).__mro__ if c in _KINDS), None)
        if kind is None:
            raise KeyError(type(data))
    return kind
