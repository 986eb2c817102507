"""The native gRPC server: HTTP/2 straight on Trio, no asyncio loop between wire and session.

One nursery holds the listeners' accept loops and one task per connection
(:class:`~remotemedia.transport.h2_connection.Connection`), whose calls run the same
service functions as the grpclib transport (:mod:`~remotemedia.transport.native_calls`).

Shutdown drains, as the grpclib transport does: health turns NOT_SERVING and the
listeners close; live sessions take no more input, finish their work and answer
``closed``; after the drain timeout the rest are cancelled (and still answer
``closed``); every call ends with its trailers, then each connection gets GOAWAY
(queued after those trailers, so no client sees its stream cut). Each step has a
deadline.
"""

from __future__ import annotations

import errno
import logging
import socket as stdlib_socket

import trio

from remotemedia.config import ServerConfig
from remotemedia.log_throttle import LogThrottle
from remotemedia.service.context import ServiceContext
from remotemedia.service.identity import SERVER_HEADER
from remotemedia.service.reclaim import serve_reclaim
from remotemedia.transport.drain import AllCalls, drain_calls
from remotemedia.transport.h2_connection import Connection, peer_log
from remotemedia.transport.health import HealthState
from remotemedia.transport.http2 import LINGER
from remotemedia.transport.metrics_http import serve_metrics
from remotemedia.transport.native_calls import Calls
from remotemedia.transport.setup import ServerAddress, cannot_listen
from remotemedia.transport.web import start_web

__all__ = ["serve_native"]

logger = logging.getLogger(__name__)

BACKLOG = 1024
_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
"""Accept failures that mean "out of resources": wait a little and accept again."""


class _Server:
    """The listeners, the connections and the calls of one native server."""

    def __init__(self, config: ServerConfig, calls: Calls) -> None:
        self.config = config
        self.calls = calls
        server_id = calls.context.server_id.encode()
        self.identity = ((SERVER_HEADER.encode(), server_id),)
        self.connections: set[Connection] = set()
        # Lines clients cause (a flood of connections, a broken one), at a bounded rate.
        self.log = LogThrottle(logger)
        self.peer_log = peer_log()
        self.accepting = trio.CancelScope()
        self._gone = trio.Event()
        self._gone.set()

    async def accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        """Accept connections until the server stops listening, one task each."""
        with self.accepting, listener.socket:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as error:
                    if error.errno not in _ACCEPT_ERRORS:
                        raise
                    self.log.warning("Cannot accept connections (%s); retrying in 0.1 s.", error)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self.serve_connection, stream)

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        limits = self.config.limits
        refuse = len(self.connections) >= limits.max_connections
        connection = Connection(
            stream,
            limits,
            self.calls.run,
            refuse=refuse,
            identity=self.identity,
            log=self.peer_log,
        )
        self.connections.add(connection)
        if self._gone.is_set():
            self._gone = trio.Event()
        try:
            await connection.serve()
        except Exception:
            # One connection's failure is its own: it is closed, the server goes on.
            self.log.exception("A connection failed unexpectedly and was closed.")
        finally:
            self.connections.discard(connection)
            if not self.connections:
                self._gone.set()

    async def close_connections(self) -> None:
        """GOAWAY to every connection, and wait (a bounded time) for them to close."""
        with trio.move_on_after(2 * LINGER + 1.0):
            async with trio.open_nursery() as nursery:
                for connection in list(self.connections):
                    nursery.start_soon(connection.part)
            await self._gone.wait()


async def serve_native(
    config: ServerConfig,
    context: ServiceContext,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[ServerAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`~remotemedia.transport.serving.serve` on the native transport."""
    health = HealthState()
    calls = Calls(context, config.auth, health)
    server = _Server(config, calls)
    host, port = config.host_port
    try:
        listener = await _open_listener(host, port, config.reuse_port)
    except OSError as error:
        raise cannot_listen(host, port, error) from None
    bound = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        if context.workers is not None:  # builds of model environments outlive sessions
            await nursery.start(context.workers.environments.serve)
        nursery.start_soon(server.accept, listener, nursery)
        nursery.start_soon(serve_reclaim, context.manager)
        metrics_port = None
        if config.metrics_port is not None:
            metrics_port = await nursery.start(
                serve_metrics, context.metrics.render, config.metrics_host, config.metrics_port
            )
        web_stop = trio.Event()
        web, web_port = await start_web(nursery, config, context, web_stop)
        task_status.started(ServerAddress(host, bound, metrics_port, web_port))
        await shutdown.wait()
        health.drain()
        await trio.sleep(config.drain_delay)  # still serving, while balancers notice
        server.accepting.cancel()
        await drain_calls(context.manager, AllCalls(calls, web), config.drain_timeout)
        web_stop.set()
        await server.close_connections()
        nursery.cancel_scope.cancel()


async def _open_listener(host: str, port: int, reuse_port: bool) -> trio.SocketListener:
    """Bind and listen on ``host:port`` (the first address it resolves to)."""
    infos = await trio.socket.getaddrinfo(
        host, port, type=stdlib_socket.SOCK_STREAM, flags=stdlib_socket.AI_PASSIVE
    )
    family, socktype, proto, _, address = infos[0]
    sock = trio.socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
        await sock.bind(address)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)
