"""The binary framing of IPC messages between the runtime and worker processes (sans-IO).

Frames use the original runtime's layout, all integers little-endian::

    u8   kind           1 Audio, 2 Video, 3 Text, 5 Control, 8 EndOfInput   (the original's)
                        9 Json, 10 Binary, 0x83 Error                       (added here)
    u16  session_len
    [..] session id     UTF-8
    u64  timestamp      microseconds since the epoch
    u32  payload_len
    [..] payload

Payloads:

- Audio: ``u32 sample_rate | u16 channels | u32 meta_len | meta JSON | f32 samples``
  (the original's HEAD layout).
- Video (an :class:`~remotemedia.media.Image`): ``u32 width | u32 height | u8 format |
  u8 codec | u64 frame_number | u8 keyframe | pixels``, format numbered as the original's
  IPC (1 YUV420P, 4 RGB24, 5 RGBA32; 6 GRAY8 added).
- Text: UTF-8, or ``0x00 | u8 len | channel | text`` for a non-default channel.
- Control: JSON ``{message_type, segment_id, timestamp_ms, metadata}``.
- Json: UTF-8 JSON. An event of :mod:`remotemedia.events` is sent as its Json, and
  a Json of an event's shape decodes as that event (so a worker's transcripts come
  back typed; the value is the one decoded either way). Binary: ``u16 mime_len |
  mime | bytes``.
- EndOfInput: empty (the original's), or from a worker ``u32 outputs``: how many data
  frames it sent for the input, so that a frame lost on the way is noticed; then
  optionally ``u64 started_ns | u64 ended_ns``: when the worker's node began and
  finished its work on the input (``time.time_ns()``, the host's wall clock), for the
  runtime's worker metrics and trace spans (a worker needs no tracing library).
  Error: UTF-8 JSON ``{message, type}``.

Rules of the worker protocol built on these frames:

1. A worker handles inputs strictly in order, one at a time.
2. For every input it sends zero or more data frames, then exactly one EndOfInput
   or Error frame; so outputs belong to the oldest unfinished input, and no
   correlation id is needed.
3. Any malformed frame is a :class:`CorruptFrameError` naming what is wrong, never
   another exception.
"""

from __future__ import annotations

import enum
import json
import struct
from typing import Any

import attrs
import numpy as np

from remotemedia.errors import InvalidMediaError, RemoteMediaError
from remotemedia.events import event_of
from remotemedia.media import Audio, Binary, Control, Image, Json, RuntimeData, Text

__all__ = [
    "CorruptFrameError",
    "Frame",
    "FrameKind",
    "decode_data",
    "decode_error",
    "decode_frame",
    "encode_data",
    "encode_end",
    "encode_error",
    "encode_frame",
    "end_count",
    "end_work",
]


class CorruptFrameError(RemoteMediaError):
    """An IPC frame does not follow the framing; the message says where it breaks."""


class FrameKind(enum.IntEnum):
    """What a frame carries."""

    AUDIO = 1
    VIDEO = 2
    TEXT = 3
    CONTROL = 5
    END_OF_INPUT = 8
    JSON = 9
    BINARY = 10
    ERROR = 0x83


@attrs.frozen
class Frame:
    """One decoded frame: its kind, session, timestamp and raw payload."""

    kind: FrameKind
    session_id: str
    timestamp_us: int
    payload: bytes | memoryview


_HEADER_PREFIX = struct.Struct("<BH")
_HEADER_SUFFIX = struct.Struct("<QI")
_AUDIO = struct.Struct("<IHI")
_VIDEO = struct.Struct("<IIBBQB")
_COUNT = struct.Struct("<I")
_WORK = struct.Struct("<IQQ")  # outputs, started_ns, ended_ns
_PIXEL_CODES = {"yuv420p": 1, "rgb24": 4, "rgba32": 5, "gray8": 6}
_PIXEL_FORMATS = {code: name for name, code in _PIXEL_CODES.items()}


def encode_frame(kind: FrameKind, session_id: str, timestamp_us: int, payload: bytes) -> bytes:
    """Encode one frame."""
    return _frame_header(kind, session_id, timestamp_us, len(payload)) + payload


def decode_frame(buffer: bytes | memoryview) -> Frame:
    """Decode one complete frame; the payload is a view into ``buffer`` (no copy).

    Raises:
        CorruptFrameError: The frame is truncated, has trailing bytes, an unknown kind,
            or a session id that is not UTF-8.
    """
    view = memoryview(buffer)
    if len(view) < _HEADER_PREFIX.size:
        raise CorruptFrameError(f"frame of {len(view)} bytes is shorter than its header")
    kind_code, session_len = _HEADER_PREFIX.unpack_from(view)
    try:
        kind = FrameKind(kind_code)
    except ValueError:
        raise CorruptFrameError(f"unknown frame kind {kind_code}") from None
    offset = _HEADER_PREFIX.size + session_len
    if len(view) < offset + _HEADER_SUFFIX.size:
        raise CorruptFrameError(
            f"frame of {len(view)} bytes ends inside its header (session id of {session_len} bytes)"
        )
    try:
        session_id = bytes(view[_HEADER_PREFIX.size : offset]).decode()
    except UnicodeDecodeError:
        raise CorruptFrameError("session id is not valid UTF-8") from None
    timestamp_us, payload_len = _HEADER_SUFFIX.unpack_from(view, offset)
    offset += _HEADER_SUFFIX.size
    if len(view) != offset + payload_len:
        raise CorruptFrameError(
            f"payload length says {payload_len} bytes but the frame holds {len(view) - offset}"
        )
    return Frame(kind, session_id, timestamp_us, view[offset:])


def encode_data(data: RuntimeData | None, session_id: str, timestamp_us: int = 0) -> bytes:
    """Encode a runtime value (None: an EndOfInput frame) as one frame.

    An image travels with its own ``timestamp_us`` in the frame header.
    """
    return b"".join(encode_data_parts(data, session_id, timestamp_us))


def encode_data_parts(
    data: RuntimeData | None, session_id: str, timestamp_us: int = 0
) -> list[bytes | memoryview]:
    """:func:`encode_data` as the pieces of the frame, in order, without joining them.

    Audio samples stay a view of the caller's array (no copy when they are
    little-endian float32 already), so a publisher can copy each piece once,
    straight into shared memory. The caller must not change the array until the
    pieces are written.
    """
    if isinstance(data, Image):
        timestamp_us = data.timestamp_us
    if isinstance(data, Audio):
        meta = json.dumps(dict(data.metadata)).encode() if data.metadata else b""
        samples = np.ascontiguousarray(data.samples, dtype="<f4")
        body = samples.data.cast("B")
        head = _AUDIO.pack(data.sample_rate, data.channels, len(meta)) + meta
        return [
            _frame_header(FrameKind.AUDIO, session_id, timestamp_us, len(head) + len(body)),
            head,
            body,
        ]
    kind, payload = _payload(data)
    return [_frame_header(kind, session_id, timestamp_us, len(payload)), payload]


def _frame_header(kind: FrameKind, session_id: str, timestamp_us: int, payload_len: int) -> bytes:
    session = session_id.encode()
    if len(session) > 0xFFFF:
        raise ValueError("session id is longer than 65535 bytes")
    return (
        _HEADER_PREFIX.pack(kind, len(session))
        + session
        + _HEADER_SUFFIX.pack(timestamp_us, payload_len)
    )


def encode_end(
    outputs: int,
    session_id: str,
    timestamp_us: int = 0,
    worked_ns: tuple[int, int] | None = None,
) -> bytes:
    """Encode a worker's EndOfInput frame: the input is done, after ``outputs`` data frames.

    ``worked_ns``: when its node began and finished the work (``time.time_ns()``).
    """
    payload = _COUNT.pack(outputs) if worked_ns is None else _WORK.pack(outputs, *worked_ns)
    return encode_frame(FrameKind.END_OF_INPUT, session_id, timestamp_us, payload)


def end_count(frame: Frame) -> int | None:
    """The output count of an EndOfInput frame; None if it carries none (the original's).

    Raises:
        CorruptFrameError: The payload is neither empty nor a count.
    """
    if not frame.payload:
        return None
    if len(frame.payload) not in (_COUNT.size, _WORK.size):
        raise CorruptFrameError(
            f"END_OF_INPUT payload is {len(frame.payload)} bytes, not {_COUNT.size} (a count) "
            f"or {_WORK.size} (a count and the work's times)"
        )
    count: int = _COUNT.unpack_from(frame.payload)[0]
    return count


def end_work(frame: Frame) -> tuple[int, int] | None:
    """When the worker's node began and finished the input (``time.time_ns()``), if it said.

    Call after :func:`end_count`, which checks the payload's size.
    """
    if len(frame.payload) != _WORK.size:
        return None
    _, started, ended = _WORK.unpack(frame.payload)
    return started, ended


def encode_error(message: str, error_type: str, session_id: str, timestamp_us: int = 0) -> bytes:
    """Encode an Error frame: the input failed with this message."""
    payload = json.dumps({"message": message, "type": error_type}).encode()
    return encode_frame(FrameKind.ERROR, session_id, timestamp_us, payload)


def _payload(data: RuntimeData | None) -> tuple[FrameKind, bytes]:
    if data is None:
        return FrameKind.END_OF_INPUT, b""
    if isinstance(data, Audio):
        meta = json.dumps(dict(data.metadata)).encode() if data.metadata else b""
        header = _AUDIO.pack(data.sample_rate, data.channels, len(meta))
        return FrameKind.AUDIO, header + meta + data.samples.astype("<f4", copy=False).tobytes()
    if isinstance(data, Text):
        text = data.text.encode()
        # A text that starts with NUL goes tagged even on the default channel, or
        # its first bytes would read as a channel tag.
        if data.channel in ("", "tts") and not text.startswith(b"\x00"):
            return FrameKind.TEXT, text
        channel = data.channel.encode()
        if len(channel) > 0xFF:
            raise ValueError("text channel name is longer than 255 bytes")
        return FrameKind.TEXT, b"\x00" + bytes([len(channel)]) + channel + text
    if isinstance(data, Json):
        return FrameKind.JSON, json.dumps(data.value).encode()
    if isinstance(data, Binary):
        mime = data.mime_type.encode()
        return FrameKind.BINARY, struct.pack("<H", len(mime)) + mime + data.data
    if isinstance(data, Image):
        header = _VIDEO.pack(
            data.width,
            data.height,
            _PIXEL_CODES[data.pixel_format],
            0,
            data.frame_number,
            1,
        )
        return FrameKind.VIDEO, header + data.pixels
    control = {
        "message_type": data.kind,
        "segment_id": data.segment_id,
        "metadata": dict(data.fields),
    }
    return FrameKind.CONTROL, json.dumps(control).encode()


def decode_data(frame: Frame, *, copy: bool = True) -> RuntimeData | None:
    """Turn a data frame into a runtime value (EndOfInput: None).

    Args:
        frame: A decoded frame (not an Error frame).
        copy: Copy audio samples out of the frame's buffer. Pass False only while the
            buffer stays valid (inside a shared-memory lease); the samples are then a
            read-only view into it.

    Raises:
        CorruptFrameError: The payload does not match its kind.
    """
    payload = frame.payload
    try:
        return _decode(frame, memoryview(payload), copy)
    except CorruptFrameError:
        raise
    except (struct.error, ValueError, RecursionError, InvalidMediaError) as exc:
        # ValueError covers UnicodeDecodeError and json.JSONDecodeError.
        raise CorruptFrameError(f"{frame.kind.name} payload is malformed: {exc}") from None


def _decode(frame: Frame, payload: memoryview, copy: bool) -> RuntimeData | None:
    kind = frame.kind
    if kind is FrameKind.END_OF_INPUT:
        return None
    if kind is FrameKind.AUDIO:
        rate, channels, meta_len = _AUDIO.unpack_from(payload)
        start = _AUDIO.size + meta_len
        if start > len(payload):
            raise CorruptFrameError("AUDIO metadata runs past the payload")
        metadata: Any = json.loads(bytes(payload[_AUDIO.size : start])) if meta_len else {}
        if not isinstance(metadata, dict):
            raise CorruptFrameError("AUDIO metadata is not a JSON object")
        body = payload[start:]
        if len(body) % 4:
            raise CorruptFrameError(f"AUDIO samples take {len(body)} bytes, not a multiple of 4")
        samples = np.frombuffer(body, dtype="<f4")
        samples = samples.astype(np.float32) if copy else samples
        if not copy:
            samples.flags.writeable = False
        return Audio(samples, rate, channels, metadata=metadata)
    if kind is FrameKind.TEXT:
        raw = bytes(payload)
        if raw[:1] == b"\x00" and len(raw) >= 2:
            end = 2 + raw[1]
            if end > len(raw):
                raise CorruptFrameError("TEXT channel tag runs past the payload")
            return Text(raw[end:].decode(), channel=raw[2:end].decode())
        return Text(raw.decode())
    if kind is FrameKind.JSON:
        data = Json(json.loads(bytes(payload)))  # checked first: JSON text may hold NaN
        event = event_of(data)
        return data if event is None else event
    if kind is FrameKind.BINARY:
        (mime_len,) = struct.unpack_from("<H", payload)
        if 2 + mime_len > len(payload):
            raise CorruptFrameError("BINARY mime type runs past the payload")
        mime = bytes(payload[2 : 2 + mime_len]).decode()
        return Binary(bytes(payload[2 + mime_len :]), mime_type=mime)
    if kind is FrameKind.VIDEO:
        width, height, fmt, _, frame_number, _ = _VIDEO.unpack_from(payload)
        if fmt not in _PIXEL_FORMATS:
            raise CorruptFrameError(f"VIDEO pixel format {fmt} is not supported")
        pixels = bytes(payload[_VIDEO.size :])
        return Image(
            pixels,
            width,
            height,
            _PIXEL_FORMATS[fmt],  # type: ignore[arg-type]
            frame_number=frame_number,
            timestamp_us=frame.timestamp_us,
        )
    if kind is FrameKind.CONTROL:
        value = json.loads(bytes(payload))
        if not isinstance(value, dict) or not isinstance(value.get("message_type"), str):
            raise CorruptFrameError("CONTROL payload needs a JSON object with a message_type")
        fields = value.get("metadata") or {}
        return Control(value["message_type"], str(value.get("segment_id", "")), fields=fields)
    raise CorruptFrameError(f"{kind.name} frames carry no data")


def decode_error(frame: Frame) -> tuple[str, str]:
    """The (message, type) of an Error frame."""
    try:
        value = json.loads(bytes(frame.payload))
        return str(value["message"]), str(value.get("type", "Error"))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise CorruptFrameError(f"ERROR payload is malformed: {exc}") from None
