"""Which server process answered: the ``remotemedia-server`` response header.

Behind a load balancer a client cannot tell the replicas apart by address, so
every response names its server process. The header is an addition to the
original protocol: clients that do not know it ignore it.
"""

from __future__ import annotations

import os
import socket

__all__ = ["SERVER_HEADER", "default_server_id"]

SERVER_HEADER = "remotemedia-server"
"""The response header (initial metadata) that names the server process."""


def default_server_id() -> str:
    """``<host name>/<process id>``: in Kubernetes the host name is the pod's name."""
    return f"{socket.gethostname()}/{os.getpid()}"
