"""Serve the ``remotemedia.v1`` services with the transport the config names."""

from __future__ import annotations

import trio

from remotemedia.config import ServerConfig
from remotemedia.nodes import NodeRegistry
from remotemedia.service.compose import build_service
from remotemedia.service.seams import NO_SEAMS, Seams
from remotemedia.transport.setup import ServerAddress

__all__ = ["ServerAddress", "serve"]


async def serve(
    config: ServerConfig,
    shutdown: trio.Event,
    *,
    registry: NodeRegistry | None = None,
    seams: Seams = NO_SEAMS,
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
        seams: Where a fault-injection kit wraps the runtime's objects; default: nowhere.
        task_status: Receives the bound address when the server is up.
    """
    context = build_service(config, registry, seams)
    if config.transport == "native":
        from remotemedia.transport.native_server import serve_native

        await serve_native(config, context, shutdown, task_status=task_status)
    else:
        from remotemedia.transport.grpc_server import serve_grpc

        await serve_grpc(config, context, shutdown, task_status=task_status)
