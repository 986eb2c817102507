"""Print the raw HTTP/2 bytes HAProxy sends to check a replica's gRPC health, as hex.

HAProxy 2.6 has no gRPC health check, and its ``http-check send`` cannot carry the
NUL bytes every gRPC message starts with. So ``deploy/haproxy/haproxy.cfg`` checks
with ``tcp-check``: it opens a connection, sends these bytes (the HTTP/2 preface, an
empty SETTINGS frame, the HEADERS of a ``grpc.health.v1.Health/Check`` call and one
DATA frame with the request) and expects the bytes of a SERVING answer.

    python3 scripts/haproxy_health_check.py [SERVICE]

SERVICE defaults to ``remotemedia.v1.StreamingPipelineService``; pass ``""`` for the
server as a whole. The headers are HPACK literals without Huffman coding, so the
output depends on nothing but the service name.
"""

from __future__ import annotations

import struct
import sys

SERVICE = "remotemedia.v1.StreamingPipelineService"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SERVING = bytes.fromhex("00000000020801")
"""A gRPC message (uncompressed, 2 bytes) holding HealthCheckResponse{status: SERVING}."""


def _string(value: bytes) -> bytes:
    # HPACK string literal, no Huffman; every value here is shorter than 127 bytes.
    assert len(value) < 127
    return bytes([len(value)]) + value


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    header = struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
    return header + struct.pack(">I", stream) + payload


def check_request(service: str = SERVICE) -> bytes:
    """The whole client side of one Check call on a fresh connection."""
    headers = (
        b"\x83"  # :method POST (static table 3)
        + b"\x86"  # :scheme http (static table 6)
        + b"\x04"
        + _string(b"/grpc.health.v1.Health/Check")  # :path, name from index 4
        + b"\x01"
        + _string(b"haproxy")  # :authority, name from index 1
        + b"\x0f\x10"
        + _string(b"application/grpc")  # content-type, index 31
        + b"\x00"
        + _string(b"te")
        + _string(b"trailers")  # a new name
    )
    name = service.encode()
    message = (b"\x0a" + bytes([len(name)]) + name) if name else b""  # field 1, string
    data = b"\x00" + struct.pack(">I", len(message)) + message
    return (
        PREFACE
        + _frame(0x4, 0, 0, b"")  # SETTINGS, none changed
        + _frame(0x1, 0x4, 1, headers)  # HEADERS, END_HEADERS, stream 1
        + _frame(0x0, 0x1, 1, data)  # DATA, END_STREAM
    )


if __name__ == "__main__":
    print(check_request(sys.argv[1] if len(sys.argv) > 1 else SERVICE).hex())
