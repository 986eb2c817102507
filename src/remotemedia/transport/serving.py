"""Every edge of a server, started beside each other: where a newcomer finds them all.

:func:`serve` builds the service once (:func:`~remotemedia.service.compose.build_service`)
and opens, in one nursery:

- the gRPC edge the config names: the native HTTP/2 server on Trio
  (:func:`~remotemedia.transport.native_server.open_native_edge`) or grpclib's
  (:func:`~remotemedia.transport.grpc_server.open_grpclib_edge`);
- the browser edge, WebSocket and page (:func:`~remotemedia.transport.web.start_web`),
  if ``--web-port`` asks for it, and beside it on the same port the WebRTC edge
  (:class:`~remotemedia.transport.webrtc.WebRtcEdge`), unless ``--webrtc off``;
- the Prometheus endpoint (:func:`~remotemedia.transport.metrics_http.serve_metrics`);
- what belongs to the server rather than to any call: reclaiming memory after
  sessions (:func:`~remotemedia.service.reclaim.serve_reclaim`) and the builds of
  model environments.

Every edge runs its calls through the same call runner
(:mod:`remotemedia.service.calls`), so limits, typed errors, metrics and the drain
are the same on each. Shutdown drains them together: the gRPC edge says NOT_SERVING
and stops accepting; live sessions of every edge take no more input, finish their
work and answer ``closed``; after the drain timeout the rest are cancelled; then
the WebSocket edge stops and the gRPC connections get GOAWAY.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import trio

from remotemedia.config import ServerConfig
from remotemedia.nodes import NodeRegistry
from remotemedia.observability.tracing import Tracing, tracing_from_env
from remotemedia.service.compose import build_service
from remotemedia.service.context import ServiceContext
from remotemedia.service.drain import AllCalls, drain_calls
from remotemedia.service.live import snapshot
from remotemedia.service.reclaim import serve_reclaim
from remotemedia.service.seams import NO_SEAMS, Seams
from remotemedia.transport.edge import Edge
from remotemedia.transport.metrics_http import serve_metrics
from remotemedia.transport.setup import ServerAddress
from remotemedia.transport.web import start_web

__all__ = ["ServerAddress", "serve"]

OpenEdge = Callable[[ServerConfig, ServiceContext], AbstractAsyncContextManager[Edge]]


async def serve(
    config: ServerConfig,
    shutdown: trio.Event,
    *,
    registry: NodeRegistry | None = None,
    seams: Seams = NO_SEAMS,
    tracing: Tracing | None = None,
    task_status: trio.TaskStatus[ServerAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the remotemedia.v1 services until ``shutdown`` is set, then drain.

    Calls ``task_status.started(address)`` once every edge accepts connections.
    Cancelling the task instead stops everything at once (no drain).

    Args:
        config: Address, auth, limits and metrics settings.
        shutdown: Set it to stop gracefully: refuse new sessions, end live ones with
            ``closed``, wait up to ``config.drain_timeout``, close.
        registry: The node types to serve; default: the built-in ones.
        seams: Where a fault-injection kit wraps the runtime's objects; default: nowhere.
        tracing: Where sessions' traces go; default: as the ``OTEL_*`` variables say
            (:func:`~remotemedia.observability.tracing.tracing_from_env`; off unless set).
        task_status: Receives the bound addresses when the server is up.
    """
    tracing = tracing or tracing_from_env()
    try:
        await _serve(config, shutdown, build_service(config, registry, seams, tracing), task_status)
    finally:
        if tracing is not None:
            # What is left goes out; the exporter's own timeouts bound it, and so does
            # this (an unreachable collector must not hold the server's exit).
            with trio.CancelScope(shield=True), trio.move_on_after(TRACE_FLUSH_TIMEOUT):
                await trio.to_thread.run_sync(tracing.shutdown, abandon_on_cancel=True)


TRACE_FLUSH_TIMEOUT = 5.0
"""Seconds the server waits, when it stops, for its last spans to be exported."""


async def _serve(
    config: ServerConfig,
    shutdown: trio.Event,
    context: ServiceContext,
    task_status: trio.TaskStatus[ServerAddress],
) -> None:
    host, _ = config.host_port
    # The gRPC edge binds first: a busy port is the likeliest mistake, said plainly.
    async with (
        _grpc_edge(config.transport)(config, context) as grpc,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve_reclaim, context.manager)
        if context.workers is not None:  # builds of model environments outlive sessions
            await nursery.start(context.workers.environments.serve)
        metrics_port = None
        if config.metrics_port is not None:
            metrics_port = await nursery.start(
                functools.partial(serve_metrics, sessions=functools.partial(_sessions, context)),
                context.metrics.render,
                config.metrics_host,
                config.metrics_port,
            )
        web_stop = trio.Event()
        web, web_port = await start_web(nursery, config, context, web_stop)
        webrtc = web is not None and web.webrtc is not None
        task_status.started(ServerAddress(host, grpc.port, metrics_port, web_port, webrtc))
        await shutdown.wait()
        await grpc.stop_accepting()
        await drain_calls(context.manager, AllCalls(grpc.calls, web), config.drain_timeout)
        web_stop.set()  # its sessions have said `closed`
        nursery.cancel_scope.cancel()


def _sessions(context: ServiceContext) -> str:
    """The live sessions' document (``/v1/sessions``, what ``remotemedia top`` reads)."""
    return json.dumps(snapshot(context.server_id, context.manager.draining, context.views))


def _grpc_edge(transport: str) -> OpenEdge:
    """The gRPC edge ``--transport`` names.

    Each is imported only when chosen, so the native server never loads asyncio.
    """
    if transport == "native":
        from remotemedia.transport.native_server import open_native_edge

        return open_native_edge
    from remotemedia.transport.grpc_server import open_grpclib_edge

    return open_grpclib_edge
