"""The native transport's sans-IO gRPC layer: messages split anywhere, limits, trailers."""

from __future__ import annotations

import random

import pytest

from remotemedia.transport.messages import (
    CallError,
    GrpcStatus,
    MessageReader,
    frame,
    parse_timeout,
    trailers,
)

MESSAGES = [b"", b"a", b"hello world", bytes(range(256)) * 2]
STREAM = b"".join(frame(message) for message in MESSAGES)


def _read(reader: MessageReader, pieces: list[bytes]) -> list[bytes]:
    return [message for piece in pieces for message in reader.feed(piece)]


def test_whole_stream_in_one_payload_gives_every_message() -> None:
    assert _read(MessageReader(1 << 20), [STREAM]) == MESSAGES


def test_every_split_in_two_gives_the_same_messages() -> None:
    for cut in range(len(STREAM) + 1):
        reader = MessageReader(1 << 20)
        assert _read(reader, [STREAM[:cut], STREAM[cut:]]) == MESSAGES, cut
        assert reader.truncation() is None


def test_random_splits_give_the_same_messages() -> None:
    rng = random.Random(5)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 12)))
        pieces = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
        assert _read(MessageReader(1 << 20), pieces) == MESSAGES


def test_byte_by_byte_gives_the_same_messages() -> None:
    reader = MessageReader(1 << 20)
    assert _read(reader, [STREAM[i : i + 1] for i in range(len(STREAM))]) == MESSAGES


def test_oversized_message_is_refused_from_its_prefix_alone() -> None:
    reader = MessageReader(100)
    with pytest.raises(CallError) as refused:
        reader.feed(frame(b"x" * 101)[:5])  # the prefix only: nothing else is buffered
    assert refused.value.status is GrpcStatus.RESOURCE_EXHAUSTED
    assert "101 bytes exceeds the 100-byte limit" in refused.value.message


def test_message_at_the_limit_is_accepted() -> None:
    assert MessageReader(100).feed(frame(b"x" * 100)) == [b"x" * 100]


def test_compressed_message_is_unimplemented() -> None:
    with pytest.raises(CallError) as refused:
        MessageReader(100).feed(b"\x01\x00\x00\x00\x01x")
    assert refused.value.status is GrpcStatus.UNIMPLEMENTED


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00\x00", "inside a message header"),
        (b"\x00\x00\x00\x00\x09abc", "inside a message of 9 bytes"),
    ],
)
def test_stream_ending_inside_a_message_is_named(data: bytes, expected: str) -> None:
    reader = MessageReader(100)
    assert reader.feed(data) == []
    truncated = reader.truncation()
    assert truncated is not None
    assert truncated.status is GrpcStatus.INVALID_ARGUMENT
    assert expected in truncated.message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"1H", 3600.0), (b"2M", 120.0), (b"5S", 5.0), (b"250m", 0.25), (b"7u", 7e-6), (b"9n", 9e-9)],
)
def test_timeouts_parse_in_every_unit(value: bytes, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"123456789S", b"5s", b"-5S", b"5.0S", b"5"])
def test_malformed_timeout_is_invalid_argument_naming_it(value: bytes) -> None:
    with pytest.raises(CallError) as refused:
        parse_timeout(value)
    assert refused.value.status is GrpcStatus.INVALID_ARGUMENT
    assert repr(value.decode()) in refused.value.message


def test_trailers_percent_encode_the_message() -> None:
    fields = dict(trailers(GrpcStatus.INVALID_ARGUMENT, "50% off: naïve\n"))
    assert fields[b"grpc-status"] == b"3"
    assert fields[b"grpc-message"] == b"50%25 off: na%C3%AFve%0A"


def test_trailers_only_response_carries_the_headers_too() -> None:
    fields = dict(trailers(GrpcStatus.UNIMPLEMENTED, trailers_only=True))
    assert fields[b":status"] == b"200"
    assert fields[b"content-type"] == b"application/grpc"
    assert b"grpc-message" not in fields


def test_frame_prefixes_the_length() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x00\x03abc"
