"""The native gRPC server: HTTP/2 straight on Trio, no asyncio loop between wire and session.

One nursery holds the listeners' accept loops and one task per connection
(:class:`~remotemedia.transport.h2_connection.Connection`), whose calls run the same
service functions as the grpclib transport (:mod:`~remotemedia.transport.native_calls`).

It is one edge of a server (:mod:`~remotemedia.transport.serving` opens it beside
the others). At shutdown, health turns NOT_SERVING and the listeners close
(:attr:`~remotemedia.transport.edge.Edge.stop_accepting`); once the drain has ended
every call with its trailers, each connection gets GOAWAY (queued after those
trailers, so no client sees its stream cut). Each step has a deadline.
"""

from __future__ import annotations

import errno
import logging
import socket as stdlib_socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from remotemedia.config import ServerConfig
from remotemedia.log_throttle import LogThrottle
from remotemedia.service.context import ServiceContext
from remotemedia.service.identity import SERVER_HEADER
from remotemedia.transport.connection_rules import over_connection_limit
from remotemedia.transport.edge import Edge
from remotemedia.transport.h2_connection import Connection, peer_log
from remotemedia.transport.health import HealthState
from remotemedia.transport.http2 import LINGER
from remotemedia.transport.native_calls import Calls
from remotemedia.transport.setup import cannot_listen

__all__ = ["open_native_edge"]

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
        refuse = over_connection_limit(len(self.connections), limits)
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


@asynccontextmanager
async def open_native_edge(config: ServerConfig, context: ServiceContext) -> AsyncIterator[Edge]:
    """Listen for gRPC calls on ``config.bind`` and serve them until the block ends.

    Leaving the block sends every connection GOAWAY (after its calls' trailers) and
    waits a bounded time for them to close. :mod:`~remotemedia.transport.serving`
    runs the drain in between.

    Raises:
        ConfigError: The address cannot be bound.
    """
    health = HealthState()
    calls = Calls(context, config.auth, health)
    server = _Server(config, calls)
    host, port = config.host_port
    try:
        listener = await _open_listener(host, port, config.reuse_port)
    except OSError as error:
        raise cannot_listen(host, port, error) from None

    async def stop_accepting() -> None:
        health.drain()
        await trio.sleep(config.drain_delay)  # still serving, while balancers notice
        server.accepting.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.accept, listener, nursery)
        try:
            yield Edge(listener.socket.getsockname()[1], calls, stop_accepting)
        finally:
            with trio.CancelScope(shield=True):
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
