"""grpclib's internals, reached from this module only: what is used, and why.

The grpclib edge (:mod:`~remotemedia.transport.connections`,
:mod:`~remotemedia.transport.grpc_server`, :mod:`~remotemedia.transport.framing`)
needs a few things grpclib has no public API for. Each is listed here and done
here; nothing happens at import. The code is written for the grpclib versions in
:data:`WRITTEN_FOR` (``tests/unit/test_third_party_pins.py`` fails on any other, and
``pyproject.toml`` pins the same). Before allowing another version, re-check each
item against its source:

1. ``Server._protocol_factory``, the factory ``Server.start`` hands to
   ``loop.create_server``, is overridden (:class:`ServerBase`): the ``H2Protocol``
   grpclib builds is rebuilt, from the handler and configurations it was given, as
   the subclass :meth:`ServerBase.make_protocol` returns. ``H2Protocol.__init__``
   must keep only storing ``handler``, ``config`` and ``h2_config``.
2. ``Server._h2_config`` is replaced after ``Server.__init__`` (grpclib turns off
   h2's validation of requests' headers, and takes no option for it).
3. ``Server._server`` is the listening asyncio server (:attr:`ServerBase.listener`):
   its port, and closing it alone to stop accepting.
4. ``Connection._connection`` and ``Connection._transport`` are the h2 connection and
   the socket under grpclib's connection (:func:`h2_of`, :func:`transport_of`);
   grpclib deletes ``_transport`` when it closes the connection.
5. ``H2Protocol.connection_made`` builds its ``Connection`` and h2's ``H2Connection``
   inline, with no factory or setting to choose their classes: :func:`adopt` retypes
   the two just built (``__class__ =``) to subclasses that add methods and class
   attributes only (it refuses any other). The alternative, a copy of
   ``connection_made`` building the subclasses, would drift silently from grpclib's
   (TCP_NODELAY, the window settings, keepalive pings); retyping keeps grpclib's
   construction, and a subclass without state of its own has the same layout.
6. ``protocol.Stream.__terminated__(reason)`` fails a call's handler with
   ``StreamTerminatedError``, as ``EventsProcessor.close`` does, but without closing
   the socket (:func:`terminate`).
7. ``server.Stream._stream`` (the call's HTTP/2 stream) and ``_cancel_done`` (set:
   grpclib sends no trailers of its own): a call reset now (:func:`reset_now`), its
   TCP connection dropped (:func:`drop_connection`). ``protocol.Stream.closable``
   must be False once the socket is closing (it is since 0.4.9).
8. ``server.Stream._stream``, ``_codec`` and ``_recv_type``: a request message's
   bytes read before grpclib reads them (:func:`raw_reader`); without them the
   caller falls back to grpclib's ``recv_message``.
9. Client side, ``client.Stream._end_done`` and ``_maybe_raise()`` (:func:`client_ended`,
   :func:`raise_client_status`): whether the client ended its side, and the status
   the server sent before a reset. ``remotemedia.testing._grpc_wire`` still reads
   them itself.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar, cast

import attrs
from grpclib import client, server
from grpclib.config import Configuration
from grpclib.encoding.base import CodecBase
from grpclib.protocol import AbstractHandler, Connection, H2Protocol
from grpclib.protocol import Stream as H2Stream
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes

__all__ = [
    "DISTRIBUTION",
    "WRITTEN_FOR",
    "RawReader",
    "ServerBase",
    "adopt",
    "client_ended",
    "drop_connection",
    "h2_of",
    "raise_client_status",
    "raw_reader",
    "reset_now",
    "terminate",
    "transport_of",
]

DISTRIBUTION = "grpclib"
"""The distribution this module reaches into."""
WRITTEN_FOR = ("0.4.9",)
"""grpclib versions whose source items 1-9 were checked against (and tested with).

0.4.7 and 0.4.8 differ in item 7: their ``Stream.closable`` is True on a closing
socket, so :func:`reset_now` would write to it.
"""

C = TypeVar("C", bound=Connection)


class ServerBase(server.Server):
    """grpclib's Server with its private seams as hooks (items 1-3).

    Args:
        handlers: The services.
        codec: How messages are encoded and decoded.
        config: grpclib's settings.
        h2_config: h2's settings for every connection, instead of grpclib's.
    """

    def __init__(
        self,
        handlers: list[Any],
        *,
        codec: CodecBase,
        config: Configuration,
        h2_config: H2Configuration,
    ) -> None:
        super().__init__(handlers, codec=codec, config=config)
        self._h2_config = h2_config

    def make_protocol(
        self, handler: AbstractHandler, config: Configuration, h2_config: H2Configuration
    ) -> H2Protocol:
        """The protocol of one accepted connection; grpclib's own unless overridden."""
        return H2Protocol(handler, config, h2_config)

    def _protocol_factory(self) -> H2Protocol:
        # grpclib makes (and keeps, to close at shutdown) the connection's handler
        # here; its protocol is only those three parts until a connection is made.
        made = super()._protocol_factory()
        return self.make_protocol(made.handler, made.config, made.h2_config)

    @property
    def listener(self) -> asyncio.AbstractServer | None:
        """The listening asyncio server, None before ``start()``."""
        return self._server


def h2_of(connection: Connection) -> H2Connection:
    """The h2 connection under grpclib's ``connection`` (item 4)."""
    return connection._connection


def transport_of(connection: Connection) -> asyncio.Transport | None:
    """The socket under grpclib's ``connection``; None once grpclib has closed it (item 4)."""
    transport: asyncio.Transport | None = getattr(connection, "_transport", None)
    return transport


def adopt(protocol: H2Protocol, connection_type: type[C], h2_type: type[H2Connection]) -> C:
    """Give the connections ``protocol.connection_made`` has just built our subclasses (item 5).

    Args:
        protocol: A protocol whose ``connection_made`` has run.
        connection_type: A subclass of grpclib's ``Connection`` with no ``__init__``.
        h2_type: A subclass of h2's ``H2Connection`` with no ``__init__``.

    Returns:
        ``protocol.connection``, now a ``connection_type``.

    Raises:
        TypeError: A subclass has an ``__init__`` of its own (it would never run).
    """
    for subclass, base in ((connection_type, Connection), (h2_type, H2Connection)):
        if not issubclass(subclass, base) or subclass.__init__ is not base.__init__:
            raise TypeError(
                f"{subclass.__qualname__} cannot stand in for the {base.__qualname__} grpclib "
                f"has built: give it no __init__ and keep it a subclass of {base.__qualname__}."
            )
    connection = protocol.connection
    connection.__class__ = connection_type
    h2_of(connection).__class__ = h2_type
    return cast(C, connection)


def terminate(stream: H2Stream, reason: str) -> None:
    """Fail the handler of ``stream`` with ``StreamTerminatedError(reason)`` (item 6)."""
    stream.__terminated__(reason)


def reset_now(stream: server.Stream[Any, Any], error_code: ErrorCodes) -> None:
    """RST_STREAM ``error_code`` on the call now, if its stream is open (item 7).

    grpclib's ``cancel()`` would wait for the socket to drain; afterwards grpclib
    counts the call as cancelled and sends no trailers of its own.
    """
    raw = stream._stream
    if raw.closable:
        raw.reset_nowait(error_code)
    stream._cancel_done = True


def drop_connection(stream: server.Stream[Any, Any]) -> None:
    """Close the TCP connection the call came on, if it is still open (item 7)."""
    transport = getattr(getattr(stream, "_stream", None), "_transport", None)
    if transport is not None:
        transport.close()


@attrs.frozen
class RawReader:
    """What grpclib reads a call's requests with (item 8).

    Attributes:
        stream: The call's HTTP/2 stream (``await stream.recv_data(size)``).
        codec: The server's codec.
        recv_type: The request message's class.
    """

    stream: H2Stream
    codec: CodecBase
    recv_type: type[Any]


def raw_reader(stream: server.Stream[Any, Any]) -> RawReader | None:
    """How to read the call's requests under grpclib; None if its internals differ (item 8)."""
    raw = getattr(stream, "_stream", None)
    codec = getattr(stream, "_codec", None)
    recv_type = getattr(stream, "_recv_type", None)
    if raw is None or codec is None or recv_type is None:
        return None
    return RawReader(raw, codec, recv_type)


def client_ended(stream: client.Stream[Any, Any]) -> bool:
    """Whether the client has ended its side of the call (item 9)."""
    return stream._end_done


def raise_client_status(stream: client.Stream[Any, Any]) -> None:
    """Raise ``GRPCError`` with the status the server sent, if it sent one (item 9)."""
    stream._maybe_raise()
