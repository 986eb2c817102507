"""Reading and writing WAV files as :class:`~remotemedia.media.Audio`.

Reads PCM (8, 16, 24, 32-bit) and IEEE float (32, 64-bit) WAV files, including the
WAVE_FORMAT_EXTENSIBLE header, into float32; the standard library's ``wave`` module
reads neither float nor extensible files.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from remotemedia.errors import InvalidMediaError
from remotemedia.media import Audio

__all__ = ["decode_wav", "encode_wav", "read_wav", "write_wav"]

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def read_wav(path: str | os.PathLike[str]) -> Audio:
    """Read a WAV file into float32 audio.

    Raises:
        InvalidMediaError: The file is not a WAV file this reader supports; the
            message says what was found.
        OSError: The file cannot be read.
    """
    return decode_wav(Path(path).read_bytes(), source=os.fspath(path))


def decode_wav(data: bytes, *, source: str = "<bytes>") -> Audio:
    """Decode the bytes of a WAV file into float32 audio.

    Raises:
        InvalidMediaError: The bytes are not a supported WAV file.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InvalidMediaError(f"{source} is not a WAV file (no RIFF/WAVE header).")
    offset = 12
    fmt: tuple[int, int, int, int] | None = None
    while offset + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, offset)
        body = data[offset + 8 : offset + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise InvalidMediaError(f"{source} has a truncated fmt chunk.")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise InvalidMediaError(f"{source} has audio data before its fmt chunk.")
            return Audio(_samples(body, *fmt, source=source), fmt[2], fmt[1])
        offset += 8 + size + (size & 1)  # chunks are word-aligned
    raise InvalidMediaError(f"{source} has no audio data chunk.")


def _samples(
    body: bytes, tag: int, channels: int, rate: int, bits: int, *, source: str
) -> np.ndarray:
    if bits < 8 or bits % 8:
        raise InvalidMediaError(
            f"{source} uses WAV format {tag} with {bits}-bit samples; supported are PCM "
            "8/16/24/32-bit and IEEE float 32/64-bit."
        )
    width = bits // 8
    usable = len(body) - len(body) % (width * max(channels, 1))
    raw = memoryview(body)[:usable]
    if tag == _FLOAT and bits in (32, 64):
        return np.frombuffer(raw, dtype=f"<f{width}").astype(np.float32)
    if tag == _PCM and bits == 8:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if tag == _PCM and bits in (16, 32):
        scale = float(2 ** (bits - 1))
        return (np.frombuffer(raw, dtype=f"<i{width}") / scale).astype(np.float32)
    if tag == _PCM and bits == 24:
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        values = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        values = np.where(values >= 1 << 23, values - (1 << 24), values)
        return (values / float(1 << 23)).astype(np.float32)
    raise InvalidMediaError(
        f"{source} uses WAV format {tag} with {bits}-bit samples; supported are PCM "
        "8/16/24/32-bit and IEEE float 32/64-bit."
    )


def encode_wav(audio: Audio, *, float32: bool = False) -> bytes:
    """Encode audio as the bytes of a WAV file (16-bit PCM, or float32 if asked)."""
    if float32:
        payload = audio.samples.astype("<f4").tobytes()
        tag, bits = _FLOAT, 32
    else:
        # Scale by 32768 (the decoder's divisor) so a round trip is exact to half a
        # step; +1.0 itself is clipped to the largest code.
        scaled = np.round(audio.samples.astype(np.float64) * 32768.0)
        payload = np.clip(scaled, -32768, 32767).astype("<i2").tobytes()
        tag, bits = _PCM, 16
    block = audio.channels * bits // 8
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(payload),
        b"WAVE",
        b"fmt ",
        16,
        tag,
        audio.channels,
        audio.sample_rate,
        audio.sample_rate * block,
        block,
        bits,
        b"data",
        len(payload),
    )
    return header + payload


def write_wav(path: str | os.PathLike[str], audio: Audio, *, float32: bool = False) -> None:
    """Write audio to a WAV file (16-bit PCM, or float32 if asked)."""
    Path(path).write_bytes(encode_wav(audio, float32=float32))
