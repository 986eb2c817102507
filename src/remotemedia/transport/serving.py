"""Serve the ``remotemedia.v1`` services with the transport the config names."""

from __future__ import annotations

import trio

from remotemedia.config import ServerConfig
from remotemedia.nodes import NodeRegistry
from remotemedia.transport.setup import ServerAddress

__all__ = ["ServerAddress", "serve"]


async def serve(
    config: ServerConfig,
    shutdown: trio.Event,
    *,
    registry: NodeRegistry | None = None,
    task_status: trio.TaskStatus[ServerAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the remotemedia.v1 services until ``shutdown`` is set, then drain.

    Calls ``task_status.started(address)`` once the server accepts connections.
    Cancelling the task instead stops everything at once (no drain).
    ``config.transport`` picks the server: ``native`` or ``grpclib``. Each is imported
    only when chosen, so the native server never loads asyncio.

    Args:
        config: Address, auth, limits and metrics settings.
        shutdown: Set it to stop gracefully: refuse new sessions, end live ones with
            ``closed``, wait up to ``config.drain_timeout``, close.
        registry: The node types to serve; default: the built-in ones.
        task_status: Receives the bound address when the server is up.
    """
    if config.transport == "native":
        from remotemedia.transport.native_server import serve_native

        await serve_native(config, shutdown, registry=registry, task_status=task_status)
    else:
        from remotemedia.transport.grpc_server import serve_grpc

        await serve_grpc(config, shutdown, registry=registry, task_status=task_status)
