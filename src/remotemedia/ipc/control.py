"""The control socket protocol between the runtime and a worker (sans-IO).

One socketpair per worker carries wake-ups, flow control, liveness and small
control messages; the frames themselves travel through shared memory. Messages:

- ``I``: an input frame is waiting in shared memory (runtime -> worker);
- ``O``: an output frame is waiting in shared memory (worker -> runtime);
- ``C``: the runtime consumed one output frame, the worker may publish one more;
- ``J`` + u32 length + UTF-8 JSON: a control message (``config``, ``ready``,
  ``progress``, ``fatal``).

End of file on the socket means the other side is gone: a worker exits when the
runtime closes its end, and the runtime treats EOF as a worker crash.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

__all__ = ["CREDIT", "INPUT", "OUTPUT", "ControlDecoder", "encode_message"]

INPUT = b"I"
OUTPUT = b"O"
CREDIT = b"C"
_MESSAGE = b"J"
_LENGTH = struct.Struct("<I")
_MAX_MESSAGE = 16 * 1024 * 1024


def encode_message(message: dict[str, Any]) -> bytes:
    """Encode a JSON control message."""
    body = json.dumps(message).encode()
    return _MESSAGE + _LENGTH.pack(len(body)) + body


class ControlDecoder:
    """Turns received socket bytes into events: ``b"I"``, ``b"O"``, ``b"C"`` or a dict."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes | dict[str, Any]]:
        """Add received bytes; yield every complete event.

        Raises:
            ValueError: An unknown opcode or an oversized message (a protocol bug).
            TypeError: A control message that is not a JSON object.
        """
        self._buffer += data
        while self._buffer:
            opcode = bytes(self._buffer[:1])
            if opcode in (INPUT, OUTPUT, CREDIT):
                del self._buffer[:1]
                yield opcode
                continue
            if opcode != _MESSAGE:
                raise ValueError(f"unknown control opcode {opcode!r}")
            if len(self._buffer) < 1 + _LENGTH.size:
                return
            (length,) = _LENGTH.unpack_from(self._buffer, 1)
            if length > _MAX_MESSAGE:
                raise ValueError(f"control message of {length} bytes is too large")
            end = 1 + _LENGTH.size + length
            if len(self._buffer) < end:
                return
            body = bytes(self._buffer[1 + _LENGTH.size : end])
            del self._buffer[:end]
            message = json.loads(body)
            if not isinstance(message, dict):
                raise TypeError("control message is not a JSON object")
            yield message
