"""Protocol version negotiation (sans-IO)."""

from __future__ import annotations

import re

__all__ = ["PROTOCOL_VERSION", "SUPPORTED_PROTOCOLS", "compatibility"]

PROTOCOL_VERSION = "v1"
SUPPORTED_PROTOCOLS = ("v1",)
_MAJOR = re.compile(r"v?(\d+)(?:\.\d+)*")


def compatibility(client_version: str) -> tuple[bool, str]:
    """Decide whether a client that says ``client_version`` can talk to this server.

    The major version is the first number in the string (``v1``, ``1.2``,
    ``test-v1.0`` all mean protocol 1). The original server answered "compatible"
    to anything; this one checks.

    Returns:
        Whether the client is compatible, and a sentence saying why.
    """
    text = client_version.strip()
    if not text:
        return False, (
            "client_version is empty; send the protocol version the client speaks, e.g. 'v1'."
        )
    match = _MAJOR.search(text)
    if match is None:
        return False, (
            f"Cannot tell a protocol version from client_version {text!r}; "
            "send e.g. 'v1'. This server speaks v1."
        )
    major = int(match.group(1))
    if major != 1:
        return False, (f"client_version {text!r} is protocol v{major}; this server speaks only v1.")
    return True, f"Compatible: the client speaks {text}, the server speaks protocol v1."
