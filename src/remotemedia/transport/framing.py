"""gRPC message framing on grpclib streams: sizes checked before anything is read.

grpclib reads a whole message into memory before decoding it and has no size limit,
and it reports a body that ends part way through a message with a bare
AssertionError. These functions read the 5-byte gRPC header first, refuse what is
too large, and turn malformed framing into INVALID_ARGUMENT naming the problem.
"""

from __future__ import annotations

import struct
from typing import Any

from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from remotemedia.transport import grpclib_internals
from remotemedia.transport.messages import oversized_response

__all__ = ["PassThroughCodec", "check_size", "recv_data"]


class PassThroughCodec(ProtoCodec):
    """grpclib's protobuf codec, passing responses that are already serialized as they are.

    :func:`serve_stream` serializes each response once, to count its bytes; encoding
    it again here would cost a second copy of every (possibly megabyte) message.
    """

    def encode(self, message: Any, message_type: Any) -> bytes:
        """The message's bytes: as they are if already serialized."""
        if isinstance(message, bytes):
            return message
        encoded: bytes = super().encode(message, message_type)
        return encoded


async def recv_data(stream: Stream[Any, Any], max_bytes: int) -> bytes | None:
    """Receive one message's bytes, refusing one larger than ``max_bytes`` before reading it.

    grpclib reads a whole message into memory before decoding it and has no size
    limit, so the 5-byte gRPC frame header is read here first. Falls back to the
    public API if grpclib's internals ever change shape.

    Returns:
        The message's bytes, or None at the end of the requests.
    """
    reader = grpclib_internals.raw_reader(stream)
    if reader is None:
        message = await stream.recv_message()
        return None if message is None else message.SerializeToString()
    raw_stream = reader.stream
    header = await _read_exactly(raw_stream, 5, "The stream ended inside a message header.")
    if not header:
        return None
    compressed, length = struct.unpack(">?I", header)
    if compressed:
        raise GRPCError(Status.UNIMPLEMENTED, "Compressed messages are not supported.")
    if length > max_bytes:
        raise GRPCError(
            Status.RESOURCE_EXHAUSTED,
            f"A message of {length} bytes exceeds the {max_bytes}-byte limit.",
        )
    body = await _read_exactly(
        raw_stream, length, f"The stream ended inside a message of {length} bytes."
    )
    if len(body) < length:
        raise GRPCError(
            Status.INVALID_ARGUMENT, f"The stream ended inside a message of {length} bytes."
        )
    return body


async def _read_exactly(raw_stream: Any, size: int, short: str) -> bytes:
    """``size`` bytes of the request body, b"" at its end, or INVALID_ARGUMENT with ``short``.

    grpclib reports a body that ends part way through the bytes asked for with a
    bare AssertionError; that is the client's malformed framing, not our bug.
    """
    try:
        data: bytes = await raw_stream.recv_data(size)
    except AssertionError:
        raise GRPCError(Status.INVALID_ARGUMENT, short) from None
    return data


def check_size(message: Any, max_bytes: int) -> int:
    """Refuse to send a message larger than the limit (clients set the same one).

    Args:
        message: A protobuf message, or one already serialized.
        max_bytes: The limit.

    Returns:
        The message's size.
    """
    size: int = len(message) if isinstance(message, bytes) else message.ByteSize()
    if size > max_bytes:
        raise GRPCError(Status.RESOURCE_EXHAUSTED, oversized_response(size, max_bytes).message)
    return size
