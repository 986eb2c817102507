"""Unit tests for WAV encoding and decoding in remotemedia.wav."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from remotemedia.errors import InvalidMediaError
from remotemedia.media import Audio
from remotemedia.wav import decode_wav, encode_wav, read_wav, write_wav

PCM, FLOAT, EXTENSIBLE = 1, 3, 0xFFFE


def chunk(chunk_id: bytes, body: bytes) -> bytes:
    """Return one RIFF chunk, padded to an even length."""
    return chunk_id + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def fmt_body(tag: int, channels: int, rate: int, bits: int) -> bytes:
    block = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_wav_pcm16_round_trip_quantises_each_sample() -> None:
    rng = np.random.default_rng(1)
    samples = rng.uniform(-1, 1, 2_000).astype(np.float32)
    samples[:4] = [1.0, -1.0, 0.0, 1.5]  # full scale, and a value that must clip
    data = encode_wav(Audio(samples, 16_000))
    assert len(data) == 44 + 2 * samples.size
    decoded = decode_wav(data)
    assert (decoded.sample_rate, decoded.channels) == (16_000, 1)
    assert decoded.samples.dtype == np.float32
    # Both directions scale by 32768, clipping +1.0 to the largest code.
    expected = np.clip(np.round(samples.astype(np.float64) * 32768.0), -32768, 32767) / 32768.0
    np.testing.assert_array_equal(decoded.samples, expected.astype(np.float32))
    np.testing.assert_allclose(decoded.samples[4:], samples[4:], atol=0.5 / 32768 + 1e-9)
    assert decoded.samples[0] == np.float32(32767 / 32768)
    assert decoded.samples[1] == np.float32(-1.0)
    assert decoded.samples[3] == np.float32(32767 / 32768)


def test_wav_float32_round_trip_is_exact() -> None:
    rng = np.random.default_rng(2)
    samples = rng.normal(0, 0.7, 1_001).astype(np.float32)
    decoded = decode_wav(encode_wav(Audio(samples, 44_100), float32=True))
    assert decoded.sample_rate == 44_100
    np.testing.assert_array_equal(decoded.samples, samples)


def test_wav_stereo_round_trip_keeps_interleaving() -> None:
    left = np.linspace(-0.5, 0.5, 100, dtype=np.float32)
    frames = np.stack([left, -left], axis=1)
    audio = Audio(frames, 22_050, 2)
    data = encode_wav(audio, float32=True)
    channels, rate, byte_rate, block, bits = struct.unpack_from("<HIIHH", data, 22)
    assert (channels, rate, byte_rate, block, bits) == (2, 22_050, 22_050 * 8, 8, 32)
    decoded = decode_wav(data)
    assert decoded.channels == 2
    np.testing.assert_array_equal(decoded.frames(), frames)


def test_wav_decodes_8_bit_unsigned_pcm() -> None:
    data = riff(
        chunk(b"fmt ", fmt_body(PCM, 1, 8_000, 8)), chunk(b"data", bytes([0, 64, 128, 255]))
    )
    decoded = decode_wav(data)
    np.testing.assert_array_equal(decoded.samples, [-1.0, -0.5, 0.0, 127 / 128])


def test_wav_decodes_24_bit_pcm_with_sign() -> None:
    values = [0, 1, -1, 2**23 - 1, -(2**23), 0x123456]
    body = b"".join(struct.pack("<i", v)[:3] for v in values)
    data = riff(chunk(b"fmt ", fmt_body(PCM, 2, 48_000, 24)), chunk(b"data", body))
    decoded = decode_wav(data)
    assert decoded.channels == 2
    assert decoded.num_frames == 3
    expected = np.array(values, np.float64) / 2**23
    np.testing.assert_array_equal(decoded.samples, expected.astype(np.float32))


def test_wav_decodes_32_bit_pcm() -> None:
    values = [0, 2**31 - 1, -(2**31), 2**30]
    body = struct.pack("<4i", *values)
    data = riff(chunk(b"fmt ", fmt_body(PCM, 1, 16_000, 32)), chunk(b"data", body))
    expected = (np.array(values, np.float64) / 2**31).astype(np.float32)
    np.testing.assert_array_equal(decode_wav(data).samples, expected)


def test_wav_decodes_float64() -> None:
    values = [0.25, -0.125, 1.0, -1.0 / 3]
    data = riff(
        chunk(b"fmt ", fmt_body(FLOAT, 1, 8_000, 64)),
        chunk(b"data", struct.pack("<4d", *values)),
    )
    np.testing.assert_array_equal(decode_wav(data).samples, np.array(values, np.float32))


@pytest.mark.parametrize(("subformat", "bits", "pack"), [(PCM, 16, "<3h"), (FLOAT, 32, "<3f")])
def test_wav_decodes_extensible_header(subformat: int, bits: int, pack: str) -> None:
    # WAVE_FORMAT_EXTENSIBLE: cbSize, valid bits, channel mask, then the subformat GUID
    # whose first two bytes are the real format tag.
    guid = struct.pack("<H", subformat) + bytes.fromhex("000000001000800000aa00389b71")
    extension = struct.pack("<HHI", 22, bits, 0x4) + guid
    values = [-16384, 0, 16384] if subformat == PCM else [-0.5, 0.0, 0.5]
    data = riff(
        chunk(b"fmt ", fmt_body(EXTENSIBLE, 1, 32_000, bits) + extension),
        chunk(b"data", struct.pack(pack, *values)),
    )
    decoded = decode_wav(data)
    assert decoded.sample_rate == 32_000
    np.testing.assert_array_equal(decoded.samples, [-0.5, 0.0, 0.5])


def test_wav_skips_odd_sized_chunk_with_padding_before_data() -> None:
    odd = chunk(b"LIST", b"abc")  # 3 bytes + 1 pad byte
    assert len(odd) == 12
    data = riff(
        chunk(b"fmt ", fmt_body(PCM, 1, 16_000, 16)),
        odd,
        chunk(b"data", struct.pack("<2h", 8192, -8192)),
    )
    np.testing.assert_array_equal(decode_wav(data).samples, [0.25, -0.25])


def test_wav_ignores_trailing_partial_frame() -> None:
    body = struct.pack("<3h", 16384, -16384, 4096)  # one stereo frame and a half
    data = riff(chunk(b"fmt ", fmt_body(PCM, 2, 16_000, 16)), chunk(b"data", body))
    decoded = decode_wav(data)
    assert decoded.num_frames == 1
    np.testing.assert_array_equal(decoded.samples, [0.5, -0.5])


@pytest.mark.parametrize(
    "data",
    [b"", b"RIFF\0\0\0\0WAVX", b"OggS" + bytes(40), b"RIFF" + bytes(4) + b"AVI LIST"],
)
def test_wav_rejects_non_riff_wave(data: bytes) -> None:
    with pytest.raises(InvalidMediaError, match=r"clip\.wav is not a WAV file \(no RIFF/WAVE"):
        decode_wav(data, source="clip.wav")


def test_wav_rejects_file_without_data_chunk() -> None:
    data = riff(chunk(b"fmt ", fmt_body(PCM, 1, 16_000, 16)), chunk(b"LIST", b"info"))
    with pytest.raises(InvalidMediaError, match="<bytes> has no audio data chunk"):
        decode_wav(data)


def test_wav_rejects_data_before_fmt() -> None:
    data = riff(chunk(b"data", bytes(4)), chunk(b"fmt ", fmt_body(PCM, 1, 16_000, 16)))
    with pytest.raises(InvalidMediaError, match="audio data before its fmt chunk"):
        decode_wav(data)


def test_wav_rejects_short_fmt_chunk() -> None:
    data = riff(chunk(b"fmt ", bytes(14)), chunk(b"data", bytes(4)))
    with pytest.raises(InvalidMediaError, match="truncated fmt chunk"):
        decode_wav(data)


def test_wav_rejects_file_cut_inside_fmt_chunk() -> None:
    data = riff(b"fmt " + struct.pack("<I", 16) + fmt_body(PCM, 1, 16_000, 16)[:8])
    with pytest.raises(InvalidMediaError, match="truncated fmt chunk"):
        decode_wav(data)


@pytest.mark.parametrize(
    ("tag", "bits", "shown"),
    [(PCM, 12, "format 1 with 12-bit"), (FLOAT, 16, "format 3 with 16-bit"), (6, 8, "format 6")],
)
def test_wav_rejects_unsupported_format(tag: int, bits: int, shown: str) -> None:
    data = riff(chunk(b"fmt ", fmt_body(tag, 1, 8_000, bits)), chunk(b"data", bytes(8)))
    with pytest.raises(InvalidMediaError, match=f"{shown}.*supported are PCM 8/16/24/32-bit"):
        decode_wav(data)


def test_wav_rejects_4_bit_adpcm_as_unsupported() -> None:
    ima_adpcm = struct.pack("<HHIIHH", 0x11, 1, 8_000, 4_055, 256, 4)
    data = riff(chunk(b"fmt ", ima_adpcm), chunk(b"data", bytes(256)))
    with pytest.raises(InvalidMediaError, match="format 17 with 4-bit"):
        decode_wav(data)


def test_wav_write_then_read_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frames = rng.uniform(-0.9, 0.9, (300, 2)).astype(np.float32)
    path = tmp_path / "clip.wav"
    write_wav(path, Audio(frames, 24_000, 2), float32=True)
    assert path.read_bytes()[:4] == b"RIFF"
    audio = read_wav(str(path))
    assert (audio.sample_rate, audio.channels, audio.num_frames) == (24_000, 2, 300)
    np.testing.assert_array_equal(audio.frames(), frames)


def test_wav_read_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, not a wav file")
    with pytest.raises(InvalidMediaError, match=r"notes\.txt is not a WAV file"):
        read_wav(path)


def test_wav_read_missing_file_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_wav(tmp_path / "missing.wav")
