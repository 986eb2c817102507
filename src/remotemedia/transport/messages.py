"""gRPC over HTTP/2, the parts above the frames: messages, statuses, timeouts (sans-IO).

The native transport (:mod:`~remotemedia.transport.native`) builds on these; they
hold no I/O, so every rule here is unit-tested byte by byte:

- A gRPC message on the wire is a 5-byte prefix (a compressed flag and a big-endian
  length) and the message. :class:`MessageReader` takes DATA payloads as they arrive,
  split anywhere, and returns whole messages; it refuses a message larger than the
  limit from its prefix alone, before buffering any of it.
- A call ends with trailers: ``grpc-status`` and ``grpc-message`` (percent-encoded,
  as the spec requires), or with those in the response headers if nothing was sent
  ("trailers-only").
- ``grpc-timeout`` is a positive integer of at most 8 digits and a unit.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence

__all__ = [
    "CallError",
    "GrpcStatus",
    "MessageReader",
    "frame",
    "oversized_response",
    "parse_timeout",
    "response_headers",
    "trailers",
]

PREFIX = struct.Struct(">BI")
"""The compressed flag and the length before every message."""

CONTENT_TYPE = b"application/grpc"


class GrpcStatus(enum.IntEnum):
    """The gRPC status codes."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class CallError(Exception):
    """Ends a call with a status other than OK and a message for the client."""

    def __init__(self, status: GrpcStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class MessageReader:
    """Whole gRPC messages out of a stream's DATA payloads, however they were split.

    Args:
        max_bytes: The largest message accepted; a larger one is refused from its
            prefix, before any of it is buffered.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._header = bytearray()  # a prefix split across payloads
        self._length: int | None = None  # of the message being read, once its prefix is in
        # The message being read, as it came: joined once, when whole (no regrowth, and
        # nothing allocated for bytes that have not arrived: a prefix alone commits nothing).
        self._pieces: list[bytes] = []
        self._have = 0

    def truncation(self) -> CallError | None:
        """The error for a stream that ends here, if a message has begun and not ended."""
        if self._length is not None:
            return CallError(
                GrpcStatus.INVALID_ARGUMENT,
                f"The stream ended inside a message of {self._length} bytes.",
            )
        if self._header:
            return CallError(
                GrpcStatus.INVALID_ARGUMENT, "The stream ended inside a message header."
            )
        return None

    def feed(self, data: bytes) -> list[bytes]:
        """Take a DATA payload; return the messages it completes, in order.

        Raises:
            CallError: A compressed message (UNIMPLEMENTED) or one over the limit
                (RESOURCE_EXHAUSTED).
        """
        messages: list[bytes] = []
        view = memoryview(data)
        while view:
            if self._length is None:
                if not self._header and len(view) >= PREFIX.size:
                    self._length = self._check(view[: PREFIX.size])
                    view = view[PREFIX.size :]
                else:
                    need = PREFIX.size - len(self._header)
                    self._header += view[:need]
                    view = view[need:]
                    if len(self._header) < PREFIX.size:
                        break
                    self._length = self._check(self._header)
                    self._header.clear()
            take = min(len(view), self._length - self._have)
            if not self._pieces and take == self._length:
                messages.append(bytes(view[:take]))  # whole in this payload: one copy
            else:
                self._pieces.append(bytes(view[:take]))
                self._have += take
                if self._have < self._length:
                    break
                messages.append(b"".join(self._pieces))
                self._pieces, self._have = [], 0
            view = view[take:]
            self._length = None
        return messages

    def _check(self, prefix: bytes | bytearray | memoryview) -> int:
        compressed, length = PREFIX.unpack(prefix)
        if compressed:
            raise CallError(GrpcStatus.UNIMPLEMENTED, "Compressed messages are not supported.")
        if length > self.max_bytes:
            raise CallError(
                GrpcStatus.RESOURCE_EXHAUSTED,
                f"A message of {length} bytes exceeds the {self.max_bytes}-byte limit.",
            )
        return int(length)


def frame(message: bytes) -> bytes:
    """A serialized message with its 5-byte prefix, as it goes in DATA frames."""
    return PREFIX.pack(0, len(message)) + message


_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def parse_timeout(value: bytes) -> float:
    """Seconds from a ``grpc-timeout`` header (``"100m"``, ``"5S"``, ...).

    Raises:
        CallError: INVALID_ARGUMENT naming the value, if it is malformed.
    """
    digits, unit = value[:-1], value[-1:]
    if not (1 <= len(digits) <= 8 and digits.isdigit() and unit in _TIMEOUT_UNITS):
        raise CallError(
            GrpcStatus.INVALID_ARGUMENT,
            f"Malformed grpc-timeout {value.decode(errors='replace')!r}: expected up to 8 "
            "digits and one of H, M, S, m, u, n.",
        )
    return int(digits) * _TIMEOUT_UNITS[unit]


def _percent_encoded(message: str) -> bytes:
    """``grpc-message`` encoding: printable ASCII but ``%`` as is, the rest as %XX of UTF-8."""
    return b"".join(
        bytes((byte,)) if 0x20 <= byte <= 0x7E and byte != 0x25 else b"%%%02X" % byte
        for byte in message.encode()
    )


def response_headers(extra: Sequence[tuple[bytes, bytes]] = ()) -> list[tuple[bytes, bytes]]:
    """The headers of a response that will carry messages, then ``extra`` ones."""
    return [(b":status", b"200"), (b"content-type", CONTENT_TYPE), *extra]


def trailers(
    status: GrpcStatus,
    message: str = "",
    *,
    trailers_only: bool = False,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> list[tuple[bytes, bytes]]:
    """The trailers that end a call, or the whole response if nothing was sent.

    ``extra`` headers (the server's identity) go only into a whole response: a call
    that sent messages had them in its headers.
    """
    fields = response_headers(extra) if trailers_only else []
    fields.append((b"grpc-status", b"%d" % status))
    if message:
        fields.append((b"grpc-message", _percent_encoded(message)))
    return fields


def oversized_response(size: int, max_bytes: int) -> CallError:
    """The error that ends a call whose response would exceed the message limit."""
    return CallError(
        GrpcStatus.RESOURCE_EXHAUSTED,
        f"A response of {size} bytes exceeds the {max_bytes}-byte message limit; "
        "send smaller inputs or raise --max-message-mb.",
    )
