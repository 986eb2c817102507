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
    """Serve until ``shutdown`` is set, then drain (see the transport's ``serve_*``).

    ``config.transport`` picks the server: ``native`` or ``grpclib``. Each is imported
    only when chosen, so the native server never loads asyncio.
    """
    if config.transport == "native":
        from remotemedia.transport.native_server import serve_native

        await serve_native(config, shutdown, registry=registry, task_status=task_status)
    else:
        from remotemedia.transport.grpc_server import serve_grpc

        await serve_grpc(config, shutdown, registry=registry, task_status=task_status)
