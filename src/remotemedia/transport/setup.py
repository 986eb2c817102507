"""What both gRPC transports share at their edge: the address they report, the bind error."""

from __future__ import annotations

import attrs

from remotemedia.config import ConfigError

# The service itself is built by the composition root; these names stay importable here.
from remotemedia.service.compose import build_service, environments, node_environments

__all__ = [
    "ServerAddress",
    "build_service",
    "cannot_listen",
    "environments",
    "node_environments",
]


@attrs.frozen
class ServerAddress:
    """Where a started server listens (ports resolved when 0 was asked for)."""

    host: str
    port: int
    metrics_port: int | None = None
    web_port: int | None = None
    webrtc: bool = False
    """Whether the web port answers WebRTC offers too."""


def cannot_listen(host: str, port: int, error: OSError) -> ConfigError:
    """The error for a server that cannot bind its address, saying what to do."""
    return ConfigError(
        f"Cannot listen on {host}:{port}: {error.strerror or error}. Pick another "
        "--bind address or stop the process that uses it."
    )
